{{/* Labels Helm adds to every object and pod; deploy/helm/check.sh strips these when it compares. */}}
{{- define "multinic.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: multinic-dra
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{- define "multinic.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}

{{/*
The directories the binaries use when no flag names them (api/src/names.rs,
kubelet-plugin/src/daemon.rs): a directory flag is passed only when a value differs.
*/}}
{{- define "multinic.binaryDefaults" -}}
kubeletDir: /var/lib/kubelet
stateDir: /var/lib/multinic
cdiDir: /var/run/cdi
{{- end }}

{{- define "multinic.pluginDir" -}}
{{ .Values.kubeletDir }}/plugins/multinic.dev
{{- end }}
{{- define "multinic.registryDir" -}}
{{ .Values.kubeletDir }}/plugins_registry
{{- end }}

{{/* The plugin's args, as a YAML list. */}}
{{- define "multinic.pluginArgs" -}}
{{- $d := include "multinic.binaryDefaults" . | fromYaml -}}
{{- $args := list (printf "--log-format=%s" .Values.logFormat) (printf "--metrics-address=:%v" .Values.plugin.metricsPort) -}}
{{- with .Values.plugin.inventory -}}
{{- if .allowVirtual }}{{ $args = append $args "--allow-virtual" }}{{ end -}}
{{- with .includeInterfaces }}{{ $args = append $args (printf "--include-interfaces=%s" (join "," .)) }}{{ end -}}
{{- with .excludeInterfaces }}{{ $args = append $args (printf "--exclude-interfaces=%s" (join "," .)) }}{{ end -}}
{{- with .pciIds }}{{ $args = append $args (printf "--pci-ids=%s" (join "," .)) }}{{ end -}}
{{- with .drivers }}{{ $args = append $args (printf "--drivers=%s" (join "," .)) }}{{ end -}}
{{- if not (kindIs "invalid" .sharedPods) }}{{ $args = append $args (printf "--shared-pods=%v" .sharedPods) }}{{ end -}}
{{- end -}}
{{- if ne .Values.kubeletDir $d.kubeletDir -}}
{{- $args = append $args (printf "--plugin-dir=%s" (include "multinic.pluginDir" .)) -}}
{{- $args = append $args (printf "--registry-dir=%s" (include "multinic.registryDir" .)) -}}
{{- end -}}
{{- if ne .Values.stateDir $d.stateDir }}{{ $args = append $args (printf "--state-dir=%s" .Values.stateDir) }}{{ end -}}
{{- if ne .Values.cdiDir $d.cdiDir }}{{ $args = append $args (printf "--cdi-dir=%s" .Values.cdiDir) }}{{ end -}}
{{- toYaml (concat $args .Values.plugin.extraArgs) -}}
{{- end }}

{{/* The init container's command, as a YAML list. */}}
{{- define "multinic.installCniCommand" -}}
{{- $d := include "multinic.binaryDefaults" . | fromYaml -}}
{{- $cmd := list "multinic" "install-cni" "--bin-dir=/host/opt/cni/bin" -}}
{{- if ne .Values.stateDir $d.stateDir }}{{ $cmd = append $cmd (printf "--state-dir=%s" .Values.stateDir) }}{{ end -}}
{{- if .Values.cni.chain }}{{ $cmd = append $cmd "--chain-into=/host/etc/cni/net.d" }}{{ end -}}
{{- toYaml $cmd -}}
{{- end }}

{{/* The controller's args, as a YAML list. */}}
{{- define "multinic.controllerArgs" -}}
{{- $args := list (printf "--log-format=%s" .Values.logFormat) (printf "--metrics-address=:%v" .Values.controller.metricsPort) -}}
{{- toYaml (concat $args .Values.controller.extraArgs) -}}
{{- end }}
