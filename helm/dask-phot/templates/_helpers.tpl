{{/* Chart name, or nameOverride. */}}
{{- define "dask-phot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the DaskCluster's name. Short enough for the names the operator derives
from it ("<fullname>-scheduler", "<fullname>-default-worker-<id>").
*/}}
{{- define "dask-phot.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 37 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 37 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 37 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "dask-phot.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "dask-phot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "dask-phot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dask-phot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The image reference. */}}
{{- define "dask-phot.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The pods' service account. */}}
{{- define "dask-phot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dask-phot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Pod metadata (the operator's SimpleObjectMeta: labels and annotations). */}}
{{- define "dask-phot.podMetadata" -}}
labels:
  {{- include "dask-phot.selectorLabels" . | nindent 2 }}
  {{- with .Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .Values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Pod-level fields shared by the scheduler and the workers (no containers). */}}
{{- define "dask-phot.podSpec" -}}
serviceAccountName: {{ include "dask-phot.serviceAccountName" . }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      {{- if .Values.tmpSizeLimit }}
      sizeLimit: {{ .Values.tmpSizeLimit }}
      {{- else }} {}
      {{- end }}
{{- end }}

{{/* Environment of every container: S3 settings and .Values.env. */}}
{{- define "dask-phot.env" -}}
- name: DASK_TEMPORARY_DIRECTORY
  value: /tmp
{{- with .Values.s3.region }}
- name: AWS_DEFAULT_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.endpointUrl }}
- name: AWS_ENDPOINT_URL_S3
  value: {{ . | quote }}
{{- end }}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Container fields shared by the scheduler and the workers. */}}
{{- define "dask-phot.containerCommon" -}}
image: {{ include "dask-phot.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
env:
  {{- include "dask-phot.env" . | nindent 2 }}
{{- with .Values.s3.existingSecret }}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end }}
