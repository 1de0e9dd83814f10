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

{{- define "pixq.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else -}}
{{- printf "%s-secrets" (include "pixq.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Connection settings: bundled service or external endpoint (one is required). */}}
{{- define "pixq.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s-nats:4222" (include "pixq.fullname" .) -}}
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
{{- else -}}
{{- required "redis.externalUrl is required when redis.enabled=false" .Values.redis.externalUrl -}}
{{- end -}}
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
