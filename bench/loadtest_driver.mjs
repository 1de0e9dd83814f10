// Open-loop HTTP load with npm's loadtest (--rps: a timer sends each request, whether or not
// earlier ones have answered). Usage: node loadtest_driver.mjs '<json options>'; prints JSON.
// LOADTEST_MODULE: file URL of loadtest's index.js (installed by the bench into bench/.tools).
const {loadTest} = await import(process.env.LOADTEST_MODULE)

const options = JSON.parse(process.argv[2])
const result = await loadTest({...options, quiet: true})
console.log(JSON.stringify({
  targetRps: result.requestsPerSecond, effectiveRps: result.effectiveRps, totalRequests: result.totalRequests,
  totalErrors: result.totalErrors, errorCodes: result.errorCodes, elapsedSeconds: result.elapsedSeconds,
  meanLatencyMs: result.meanLatencyMs, maxLatencyMs: result.maxLatencyMs, percentiles: result.percentiles,
}))
