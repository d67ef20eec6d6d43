// The mixin's knobs. Override any of them when rendering, for example
//   jsonnet -S -e "(import 'deploy/prometheus/mixin/render.libsonnet')({selector: 'job=\"node-agent\"', runqueueP99Seconds: 0.1})"
// docs/mixin.md gives each threshold's reason.
{
  _config+:: {
    // Selects the agent's series in every rule: your scrape job.
    selector: 'job="ebpf-agent"',

    agentDownFor: '5m',
    probeDetachedFor: '10m',
    eventsDroppedFor: '10m',
    unmatchedExitsPerSecond: 1,
    unmatchedExitsFor: '15m',
    labelBudgetFor: '15m',
    tcpDestinationBudgetFor: '15m',
    // Errnos busy healthy programs return all the time; the error ratio ignores them.
    ignoredErrnos: 'EAGAIN|EINPROGRESS|ETIMEDOUT|EINTR|ERESTART.*',
    syscallErrorRatio: 0.5,
    syscallErrorsPerSecond: 10,
    syscallErrorFor: '10m',
    runqueueP99Seconds: 0.05,
    runqueueFor: '15m',
    tcpConnectFailureRatio: 0.1,
    tcpConnectFailuresPerSecond: 0.5,
    tcpConnectFor: '10m',
    configReloadFor: '10m',
    // How long an OOM kill keeps its alert firing (no for: one kill is enough).
    oomKillWindow: '10m',
  },
}
