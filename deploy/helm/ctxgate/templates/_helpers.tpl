{{/* The chart's name, truncated to the 63 characters a label allows. */}}
{{- define "ctxgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, the base of every object name. */}}
{{- define "ctxgate.fullname" -}}
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

{{- define "ctxgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ctxgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ctxgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ctxgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ctxgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ctxgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the configuration's secrets come from. */}}
{{- define "ctxgate.secretName" -}}
{{- default (include "ctxgate.fullname" .) .Values.secrets.name }}
{{- end }}

{{- define "ctxgate.serviceHost" -}}
{{- printf "%s.%s.svc.%s" (include "ctxgate.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/* server.public_url: the configured URL, else the Service's own. */}}
{{- define "ctxgate.publicURL" -}}
{{- if .Values.publicURL }}
{{- .Values.publicURL }}
{{- else }}
{{- printf "%s://%s:%d" (ternary "https" "http" .Values.tls.enabled) (include "ctxgate.serviceHost" .) (int .Values.service.port) }}
{{- end }}
{{- end }}

{{- define "ctxgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Whether more than one replica can run: PodDisruptionBudget. */}}
{{- define "ctxgate.multiReplica" -}}
{{- if or (gt (int .Values.replicaCount) 1) (and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) 1)) }}true{{ end }}
{{- end }}

{{- define "ctxgate.adminService" -}}
{{- if or .Values.service.admin.enabled .Values.metrics.serviceMonitor.enabled }}true{{ end }}
{{- end }}

{{/* The policy ConfigMap mounted at policy.dir. */}}
{{- define "ctxgate.policyConfigMap" -}}
{{- default (printf "%s-policies" (include "ctxgate.fullname" .)) .Values.policy.existingConfigMap }}
{{- end }}

{{/* Whether the policy comes from OPA bundles (policy.opa bundles or discovery), not a directory. */}}
{{- define "ctxgate.policyFromBundles" -}}
{{- if or .Values.policy.opa.bundles .Values.policy.opa.discovery }}true{{ end }}
{{- end }}
