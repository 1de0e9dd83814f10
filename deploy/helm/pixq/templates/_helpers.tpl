{{/* Chart name. */}}
{{- define "pixq.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name; component objects are <fullname>-<component>. */}}
{{- define "pixq.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Selector labels. Call with (dict "ctx" $ "component" "api" "name" "pixq-api"). */}}
{{- define "pixq.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Common labels. Same arguments as pixq.selectorLabels, plus optional "version". */}}
{{- define "pixq.labels" -}}
{{ include "pixq.selectorLabels" . }}
app.kubernetes.io/part-of: pixq
app.kubernetes.io/version: {{ default .ctx.Chart.AppVersion .version | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Image tag of a third-party image reference (for the version label). */}}
{{- define "pixq.imageTag" -}}
{{- $parts := splitList ":" . -}}
{{- if gt (len $parts) 1 }}{{ last $parts }}{{ else }}unknown{{ end -}}
{{- end -}}

{{- define "pixq.image" -}}
{{- $tag := default .ctx.Chart.AppVersion .ctx.Values.image.tag -}}
{{- if .ctx.Values.image.registry -}}
{{- printf "%s/%s:%s" .ctx.Values.image.registry .repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Secret names: the existing* value, or the chart's own <fullname>-<suffix>. */}}
{{- define "pixq.secretName" -}}
{{- default (printf "%s-secrets" (include "pixq.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "pixq.natsAuthSecretName" -}}
{{- default (printf "%s-nats-auth" (include "pixq.fullname" .)) .Values.secrets.existingNatsAuthSecret -}}
{{- end -}}

{{- define "pixq.redisAuthSecretName" -}}
{{- default (printf "%s-redis-auth" (include "pixq.fullname" .)) .Values.secrets.existingRedisAuthSecret -}}
{{- end -}}

{{- define "pixq.tenantsSecretName" -}}
{{- default (printf "%s-tenants" (include "pixq.fullname" .)) .Values.secrets.existingTenantsSecret -}}
{{- end -}}

{{/* PRESETS_FILE's ConfigMap: presets.existingConfigMap, or the chart's <fullname>-presets. */}}
{{- define "pixq.presetsConfigMapName" -}}
{{- default (printf "%s-presets" (include "pixq.fullname" .)) .Values.presets.existingConfigMap -}}
{{- end -}}

{{/* Key prefixes the minio-events Job subscribes (JSON list): minio.bucketEvents.prefixes,
     or else the prefixes of presets.document's ingest rules. */}}
{{- define "pixq.bucketEventPrefixes" -}}
{{- $prefixes := .Values.minio.bucketEvents.prefixes | default list -}}
{{- if and (not $prefixes) (not .Values.presets.existingConfigMap) -}}
{{- range (.Values.presets.document.ingest | default list) -}}
{{- $prefixes = append $prefixes .prefix -}}
{{- end -}}
{{- end -}}
{{- $prefixes | toJson -}}
{{- end -}}

{{- define "pixq.natsTlsSecretName" -}}
{{- default (printf "%s-nats-tls" (include "pixq.fullname" .)) .Values.nats.tls.secretName -}}
{{- end -}}

{{/* Connection endpoints without credentials (NOTES.txt); pods get them with credentials
     from pixq.connectionEnv. One of bundled service or external endpoint is required. */}}
{{- define "pixq.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- printf "%s://%s-nats:4222" (ternary "tls" "nats" .Values.nats.tls.enabled) (include "pixq.fullname" .) -}}
{{- else -}}
{{- required "nats.externalUrl is required when nats.enabled=false" .Values.nats.externalUrl -}}
{{- end -}}
{{- end -}}

{{- define "pixq.natsMonitoringEndpoint" -}}
{{- if .Values.nats.externalMonitoringEndpoint -}}
{{- .Values.nats.externalMonitoringEndpoint -}}
{{- else if .Values.nats.enabled -}}
{{- printf "%s-nats-headless.%s.svc.cluster.local:8222" (include "pixq.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- required "nats.externalMonitoringEndpoint is required for worker.autoscaling.mode=keda with an external NATS" .Values.nats.externalMonitoringEndpoint -}}
{{- end -}}
{{- end -}}

{{- define "pixq.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s-redis:6379/0" (include "pixq.fullname" .) -}}
{{- else if .Values.redis.externalUrl -}}
{{- .Values.redis.externalUrl -}}
{{- else -}}
{{- printf "(from Secret %s)" (required "redis.externalUrl or redis.externalUrlSecret is required when redis.enabled=false" .Values.redis.externalUrlSecret) -}}
{{- end -}}
{{- end -}}

{{/* The API's and workers' credentials. Argument: (dict "ctx" $ "component" "api"|"worker").
     Passwords come from Secrets into $(VAR) references composed into NATS_URL / REDIS_URL
     (NATS_PASSWORD and REDIS_PASSWORD serve only that); every other secret is a file, except
     the optional WEBHOOK_SECRETS: an optional secretKeyRef, so a Secret without that key
     starts pods with no global webhook signing secret (a file would have to exist). Both
     components get the URL signing key, the tenants and the webhook secrets: the API mints
     links and checks callbacks, the workers deliver webhooks. */}}
{{- define "pixq.connectionEnv" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
{{- if $v.nats.enabled }}
- name: NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "pixq.natsAuthSecretName" $ctx }}
      key: {{ ternary "API_PASSWORD" "WORKER_PASSWORD" (eq .component "api") }}
- name: NATS_URL
  value: {{ printf "%s://pixq-%s:$(NATS_PASSWORD)@%s-nats:4222" (ternary "tls" "nats" $v.nats.tls.enabled) .component (include "pixq.fullname" $ctx) | quote }}
{{- if $v.nats.tls.enabled }}
- name: NATS_TLS_CA_FILE
  value: /etc/pixq/nats-tls/ca.crt
{{- end }}
{{- else }}
- name: NATS_URL
  value: {{ include "pixq.natsUrl" $ctx | quote }}
{{- if $v.nats.externalCredsSecret }}
- name: NATS_CREDS_FILE
  value: {{ printf "/etc/pixq/nats/%s.creds" .component | quote }}
{{- end }}
{{- end }}
{{- if $v.redis.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "pixq.redisAuthSecretName" $ctx }}
      key: PASSWORD
- name: REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s-redis:6379/0" (include "pixq.fullname" $ctx) | quote }}
{{- else if $v.redis.externalUrl }}
- name: REDIS_URL
  value: {{ $v.redis.externalUrl | quote }}
{{- else }}
- name: REDIS_URL_FILE
  value: /etc/pixq/redis/REDIS_URL
{{- end }}
- name: MINIO_ACCESS_KEY_FILE
  value: /etc/pixq/secrets/MINIO_ACCESS_KEY
- name: MINIO_SECRET_KEY_FILE
  value: /etc/pixq/secrets/MINIO_SECRET_KEY
- name: URL_SIGNING_KEY_FILE
  value: /etc/pixq/secrets/URL_SIGNING_KEY
- name: TENANTS_FILE
  value: /etc/pixq/tenants/tenants.yaml
- name: PRESETS_FILE
  value: /etc/pixq/presets/presets.yaml
- name: WEBHOOK_SECRETS
  valueFrom:
    secretKeyRef:
      name: {{ include "pixq.secretName" $ctx }}
      key: WEBHOOK_SECRETS
      optional: true
{{- end -}}

{{/* volumeMounts for pixq.connectionEnv's files. Same argument. */}}
{{- define "pixq.connectionMounts" -}}
{{- $v := .ctx.Values -}}
- name: secrets
  mountPath: /etc/pixq/secrets
  readOnly: true
- name: tenants
  mountPath: /etc/pixq/tenants
  readOnly: true
- name: presets
  mountPath: /etc/pixq/presets
  readOnly: true
{{- if and $v.nats.enabled $v.nats.tls.enabled }}
- name: nats-tls
  mountPath: /etc/pixq/nats-tls
  readOnly: true
{{- end }}
{{- if and (not $v.nats.enabled) $v.nats.externalCredsSecret }}
- name: nats-creds
  mountPath: /etc/pixq/nats
  readOnly: true
{{- end }}
{{- if and (not $v.redis.enabled) (not $v.redis.externalUrl) }}
- name: redis-url
  mountPath: /etc/pixq/redis
  readOnly: true
{{- end }}
{{- end -}}

{{/* volumes for pixq.connectionMounts: each Secret projects only the keys this pod needs,
     root-owned, readable by the pod's fsGroup (mode 0440). Same argument. */}}
{{- define "pixq.connectionVolumes" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
- name: secrets
  secret:
    secretName: {{ include "pixq.secretName" $ctx }}
    defaultMode: 0440
    items:
      - {key: MINIO_ACCESS_KEY, path: MINIO_ACCESS_KEY}
      - {key: MINIO_SECRET_KEY, path: MINIO_SECRET_KEY}
      - {key: URL_SIGNING_KEY, path: URL_SIGNING_KEY}
- name: tenants
  secret:
    secretName: {{ include "pixq.tenantsSecretName" $ctx }}
    defaultMode: 0440
    items:
      - {key: tenants.yaml, path: tenants.yaml}
- name: presets
  configMap:
    name: {{ include "pixq.presetsConfigMapName" $ctx }}
    items:
      - {key: presets.yaml, path: presets.yaml}
{{- if and $v.nats.enabled $v.nats.tls.enabled }}
- name: nats-tls
  secret:
    secretName: {{ include "pixq.natsTlsSecretName" $ctx }}
    defaultMode: 0440
    items:
      - {key: ca.crt, path: ca.crt}
{{- end }}
{{- if and (not $v.nats.enabled) $v.nats.externalCredsSecret }}
- name: nats-creds
  secret:
    secretName: {{ $v.nats.externalCredsSecret }}
    defaultMode: 0440
    items:
      - {key: {{ printf "%s.creds" .component }}, path: {{ printf "%s.creds" .component }}}
{{- end }}
{{- if and (not $v.redis.enabled) (not $v.redis.externalUrl) }}
- name: redis-url
  secret:
    secretName: {{ $v.redis.externalUrlSecret }}
    defaultMode: 0440
    items:
      - {key: REDIS_URL, path: REDIS_URL}
{{- end }}
{{- end -}}

{{- define "pixq.storageEndpoint" -}}
{{- if .Values.minio.enabled -}}
{{- printf "%s-minio:9000" (include "pixq.fullname" .) -}}
{{- else -}}
{{- required "minio.externalEndpoint (host:port) is required when minio.enabled=false" .Values.minio.externalEndpoint -}}
{{- end -}}
{{- end -}}

{{/* Pod-level scheduling/safety settings shared by every pod. */}}
{{- define "pixq.podDefaults" -}}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* topologySpreadConstraints over hosts and zones. Argument: selector labels dict. */}}
{{- define "pixq.topologySpread" -}}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "pixq.selectorLabels" . | nindent 8 }}
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "pixq.selectorLabels" . | nindent 8 }}
{{- end -}}
