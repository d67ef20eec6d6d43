// ebpf-agent's monitoring mixin, in the shape of node_exporter's node-mixin:
// prometheusRules, prometheusAlerts and grafanaDashboards, tuned through _config.
(import 'config.libsonnet')
+ (import 'rules.libsonnet')
+ (import 'alerts.libsonnet')
+ {
  grafanaDashboards+:: {
    'ebpf-agent.json': (import '../../grafana/ebpf-agent.json'),
  },
}
