// Alerts. Each threshold and `for:` comes from config.libsonnet; the comments say why
// the defaults are what they are (docs/mixin.md has the table).
{
  local c = $._config,

  prometheusAlerts+:: {
    groups+: [
      {
        name: 'ebpf-agent',
        rules: [
          {
            // A pod restart or a node reboot takes a minute or two; longer is an outage.
            alert: 'EbpfAgentDown',
            expr: 'up{%(selector)s} == 0' % c,
            'for': c.agentDownFor,
            labels: { severity: 'critical' },
            annotations: {
              summary: 'ebpf-agent is not being scraped.',
              description: 'Prometheus has failed to scrape {{ $labels.instance }} for %(agentDownFor)s: its node has no eBPF or /proc metrics.' % c,
            },
          },
          {
            // A probe reports 0 from start-up when the kernel lacks what it needs; that is
            // permanent, so alert soon, and turn the probe off with --probes on such nodes.
            alert: 'EbpfAgentProbeDetached',
            expr: 'ebpf_agent_probe_attached{%(selector)s} == 0' % c,
            'for': c.probeDetachedFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'An ebpf-agent probe is not attached.',
              description: "Probe {{ $labels.probe }} on {{ $labels.instance }} is not attached, so its metrics are missing. The agent's log says why (kernel version, BTF, tracefs).",
            },
          },
          {
            // Any loss, sustained: rate over 5m stays above 0 for 10m only if events were
            // lost in more than one 5-minute stretch, so a one-off burst (a ring buffer briefly
            // full) does not page. exit_without_enter is left out: syscalls blocked before the
            // probe attached trickle in long after start, and EbpfAgentSyscallExitsUnmatched covers it.
            alert: 'EbpfAgentEventsDropped',
            expr: |||
              sum by (job, instance, probe, stage) (
                rate(ebpf_agent_events_dropped_total{%(selector)s, stage!="exit_without_enter"}[5m])
              ) > 0
            ||| % c,
            'for': c.eventsDroppedFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'ebpf-agent is losing events.',
              description: '{{ $labels.instance }} loses {{ printf "%.2f" $value }} {{ $labels.probe }} events/s at stage {{ $labels.stage }}: its counts are too low. For ringbuf_full raise --ring-buffer-bytes.',
            },
          },
          {
            // A few hundred at start-up are normal (syscalls blocked before the probe attached,
            // returning later); new threads' first returns from clone/fork are not counted. A
            // steady rate means syscall entries are being lost.
            alert: 'EbpfAgentSyscallExitsUnmatched',
            expr: |||
              sum by (job, instance) (
                rate(ebpf_agent_events_dropped_total{%(selector)s, stage="exit_without_enter"}[5m])
              )
              > %(unmatchedExitsPerSecond)g
            ||| % c,
            'for': c.unmatchedExitsFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'ebpf-agent sees syscall exits without entries.',
              description: '{{ $labels.instance }} sees {{ printf "%.2f" $value }} syscall exits/s without their entry: those syscalls are not counted.',
            },
          },
          {
            // The budgets are sticky: once spent, every new label value folds into "other" for
            // as long as it appears, so lasting folding means the budget is too small here.
            alert: 'EbpfAgentLabelBudgetExhausted',
            expr: |||
              sum by (job, instance, family) (
                rate(ebpf_agent_series_folded_total{%(selector)s}[5m])
              ) > 0
            ||| % c,
            'for': c.labelBudgetFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'An ebpf-agent label budget is spent.',
              description: '{{ $labels.instance }} folds {{ printf "%.2f" $value }} events/s of family {{ $labels.family }} into "other". Raise --container-budget (family container) or --unknown-syscall-budget (family syscall).',
            },
          },
          {
            // Expected on busy nodes (more than 50 destinations), hence only info.
            alert: 'EbpfAgentTcpDestinationBudgetExhausted',
            expr: |||
              sum by (job, instance) (
                rate(ebpf_agent_tcp_destinations_folded_total{%(selector)s}[5m])
              ) > 0
            ||| % c,
            'for': c.tcpDestinationBudgetFor,
            labels: { severity: 'info' },
            annotations: {
              summary: 'ebpf-agent folds TCP destinations into "other".',
              description: '{{ $labels.instance }} counts {{ printf "%.2f" $value }} connects/s under destination="other"; raise --tcp-destination-budget to see them.',
            },
          },
          {
            // Half of a container's syscalls failing (routine errnos aside), with a floor of
            // failures per second so that an idle container's few calls cannot trip it.
            alert: 'EbpfAgentSyscallErrorRatioHigh',
            expr: |||
              (
                instance_namespace_pod_container:ebpf_agent_syscall_errors:rate5m
                  / instance_namespace_pod_container:ebpf_agent_syscalls:rate5m > %(syscallErrorRatio)g
              )
              and instance_namespace_pod_container:ebpf_agent_syscall_errors:rate5m > %(syscallErrorsPerSecond)g
            ||| % c,
            'for': c.syscallErrorFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: "A container's syscalls fail.",
              description: '{{ $value | humanizePercentage }} of the syscalls of {{ $labels.namespace }}/{{ $labels.pod }}/{{ $labels.container }} on {{ $labels.instance }} fail (%s aside).' % std.strReplace(std.strReplace(c.ignoredErrnos, '|', ', '), '.*', '*'),
            },
          },
          {
            // 50 ms p99: the scheduler hands out slices of a few ms (EEVDF's base slice is
            // 3 ms on 8 CPUs); a p99 wait that high for 15m means oversubscribed CPUs.
            alert: 'EbpfAgentRunqueueLatencyHigh',
            expr: |||
              instance:ebpf_agent_runqueue_latency_seconds:histogram_quantile{quantile="0.99"} > %(runqueueP99Seconds)g
            ||| % c,
            'for': c.runqueueFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Threads wait long for a CPU.',
              description: 'The 99th percentile run-queue wait on {{ $labels.instance }} is {{ $value | humanizeDuration }}.',
            },
          },
          {
            // A tenth of a container's outgoing connects failing, with a floor of failures per
            // second so that rare connects do not trip it.
            alert: 'EbpfAgentTcpConnectFailuresHigh',
            expr: |||
              (
                sum by (job, instance, namespace, pod, container) (
                  rate(ebpf_agent_tcp_connects_total{%(selector)s, outcome!="success"}[5m]))
                / sum by (job, instance, namespace, pod, container) (
                  rate(ebpf_agent_tcp_connects_total{%(selector)s}[5m])) > %(tcpConnectFailureRatio)g
              )
              and sum by (job, instance, namespace, pod, container) (
                rate(ebpf_agent_tcp_connects_total{%(selector)s, outcome!="success"}[5m])) > %(tcpConnectFailuresPerSecond)g
            ||| % c,
            'for': c.tcpConnectFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Outgoing TCP connects fail.',
              description: '{{ $value | humanizePercentage }} of the outgoing connects of {{ $labels.namespace }}/{{ $labels.pod }}/{{ $labels.container }} on {{ $labels.instance }} fail (refused, timed out, unreachable or aborted).',
            },
          },
          {
            // As Prometheus' own PrometheusBadConfig: the agent keeps running on the old
            // settings, which someone believes were replaced.
            alert: 'EbpfAgentConfigReloadFailed',
            expr: 'max_over_time(ebpf_agent_config_last_reload_successful{%(selector)s}[5m]) == 0' % c,
            'for': c.configReloadFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'ebpf-agent rejected its configuration file.',
              description: 'The last reload of the configuration of {{ $labels.instance }} failed; it runs on the previous settings. Its log says why (`agent run --check-config` reproduces it).',
            },
          },
          {
            // Any kill is news: the kernel chose a process to die. By container and
            // command, so the page names who (node_vmstat_oom_kill only says where).
            alert: 'EbpfAgentOomKill',
            expr: |||
              sum by (job, instance, namespace, pod, container, command) (
                increase(ebpf_agent_oom_kills_total{%(selector)s}[%(oomKillWindow)s])) > 0
            ||| % c,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'The kernel OOM-killed a process.',
              description: 'The OOM killer chose {{ $labels.command }} in {{ $labels.namespace }}/{{ $labels.pod }}/{{ $labels.container }} on {{ $labels.instance }} ({{ $value | humanize }} in the last %(oomKillWindow)s).' % c,
            },
          },
        ],
      },
    ],
  },
}
