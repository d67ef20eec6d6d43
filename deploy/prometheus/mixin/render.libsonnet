// Renders the mixin's rules as one Prometheus rule file, with `config` overriding
// _config: deploy/prometheus/ebpf-agent.rules.yml is render({}).
function(config={})
  local mixin = (import 'mixin.libsonnet') + { _config+:: config };
  |||
    # Generated from deploy/prometheus/mixin/ (jsonnet); edit there and regenerate:
    #   jsonnet -S -e "(import 'deploy/prometheus/mixin/render.libsonnet')({})" > deploy/prometheus/ebpf-agent.rules.yml
    # Knobs (job selector, thresholds, for:) are in mixin/config.libsonnet; docs/mixin.md says why.
  |||
  + std.manifestYamlDoc(
    { groups: mixin.prometheusRules.groups + mixin.prometheusAlerts.groups },
    indent_array_in_object=true,
    quote_keys=false,
  )
  + '\n'
