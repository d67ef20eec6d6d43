// Recording rules: the heavy percentile queries, evaluated once per interval so that
// dashboards and alerts read a series instead of summing a 23-bucket histogram per
// syscall at query time; and the per-container syscall rates the error ratio alert reads.
{
  local c = $._config,
  local quantiles(record, by, histogram) = [
    {
      record: record,
      expr: |||
        histogram_quantile(%(q)g, sum by (%(by)s, le) (
          rate(%(histogram)s_bucket{%(selector)s}[5m])))
      ||| % (c { q: q, by: by, histogram: histogram }),
      labels: { quantile: '%g' % q },
    }
    for q in [0.99, 0.5]
  ],

  prometheusRules+:: {
    groups+: [
      {
        name: 'ebpf-agent.rules',
        rules:
          quantiles('instance_syscall:ebpf_agent_syscall_latency_seconds:histogram_quantile',
                    'job, instance, syscall',
                    'ebpf_agent_syscall_latency_seconds')
          + quantiles('instance:ebpf_agent_runqueue_latency_seconds:histogram_quantile',
                      'job, instance',
                      'ebpf_agent_runqueue_latency_seconds')
          + quantiles('instance:ebpf_agent_tcp_connect_latency_seconds:histogram_quantile',
                      'job, instance',
                      'ebpf_agent_tcp_connect_latency_seconds')
          + [
            {
              record: 'instance_namespace_pod_container:ebpf_agent_syscalls:rate5m',
              expr: |||
                sum by (job, instance, namespace, pod, container) (
                  rate(ebpf_agent_syscalls_total{%(selector)s}[5m]))
              ||| % c,
            },
            {
              // Routine errnos (non-blocking I/O, timed waits, interrupted calls) are not failures.
              record: 'instance_namespace_pod_container:ebpf_agent_syscall_errors:rate5m',
              expr: |||
                sum by (job, instance, namespace, pod, container) (
                  rate(ebpf_agent_syscall_errors_total{%(selector)s, errno!~"%(ignoredErrnos)s"}[5m]))
              ||| % c,
            },
          ],
      },
    ],
  },
}
