{{/* Chart name, overridable. */}}
{{- define "sofort.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name: the release name, plus the chart name unless it already contains it. */}}
{{- define "sofort.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sofort.controllerName" -}}
{{- printf "%s-controller" (include "sofort.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sofort.agentName" -}}
{{- printf "%s-agent" (include "sofort.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "sofort.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "sofort.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sofort
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "controller"). */}}
{{- define "sofort.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sofort.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "sofort.controllerServiceAccountName" -}}
{{- default (include "sofort.controllerName" .) .Values.controller.serviceAccount.name }}
{{- end }}

{{- define "sofort.agentServiceAccountName" -}}
{{- default (include "sofort.agentName" .) .Values.agent.serviceAccount.name }}
{{- end }}

{{/* Image reference: repository@digest when a digest is set, else repository:tag (tag defaults to appVersion). */}}
{{- define "sofort.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag | toString }}
{{- if eq $tag "latest" }}
{{- fail "image.tag must not be \"latest\": pin a version (default: the chart's appVersion) or set image.digest" }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Namespace of the webhook Secrets the controller may read. */}}
{{- define "sofort.secretsNamespace" -}}
{{- default .Release.Namespace .Values.notify.secretsNamespace }}
{{- end }}

{{/* Whether the agent container must be privileged: nsenter into PID 1's namespaces. */}}
{{- define "sofort.agentPrivileged" -}}
{{- if or (eq .Values.agent.rebootMethod "command") .Values.agent.hostCommands.enabled (gt (len .Values.agent.sentinel.command) 0) }}true{{ end }}
{{- end }}


{{/* Egress every sofort pod needs: the API server and cluster DNS (NetworkPolicyEgressRule list). */}}
{{- define "sofort.coreEgress" -}}
- ports:
    {{- range .Values.networkPolicy.apiServer.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with .Values.networkPolicy.apiServer.cidrs }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  {{- end }}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Values.networkPolicy.dns.namespace }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dns.podLabels | nindent 10 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}
