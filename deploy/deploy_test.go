// Package deploy holds the compose and Kubernetes examples. Its test parses
// every file and checks that what they reference exists: paths, services,
// ports, environment variables Sluice reads, secrets, config maps, metrics.
// No container engine runs here; the files are checked, not started.
package deploy

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"sluice/config"
	"sluice/configs"
	"sluice/policy"
)

// m is a YAML mapping decoded generically.
type m = map[string]any

func readYAML(t *testing.T, path string) m {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v m
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

func readDocs(t *testing.T, path string) []m {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []m
	for {
		var v m
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if v != nil {
			docs = append(docs, v)
		}
	}
}

// get walks a path of keys (string) and indices (int).
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			mm, ok := v.(m)
			if !ok {
				return nil
			}
			v = mm[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any, path ...any) string {
	s, _ := get(v, path...).(string)
	return s
}

func list(v any, path ...any) []any {
	l, _ := get(v, path...).([]any)
	return l
}

func mustExist(t *testing.T, path, what string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

// sluiceReads is the text where Sluice reads its environment: the example
// configs (${VAR}, key_env: VAR) and the command's flags (os.Getenv).
func sluiceReads(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, p := range []string{"../configs/sluice.yaml", "../configs/policies.yaml", "k8s/configmap.yaml"} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	files, _ := filepath.Glob("../cmd/sluice/*.go")
	for _, p := range files {
		data, _ := os.ReadFile(p)
		b.Write(data)
	}
	return b.String()
}

// checkEnvRead fails for a variable Sluice never reads.
func checkEnvRead(t *testing.T, reads, where, name string) {
	t.Helper()
	if !strings.HasPrefix(name, "SLUICE_") && !strings.HasPrefix(name, "OPENAI_") {
		return
	}
	if !strings.Contains(reads, "${"+name) && !strings.Contains(reads, "key_env: "+name) &&
		!strings.Contains(reads, `"`+name+`"`) {
		t.Errorf("%s: Sluice does not read %s", where, name)
	}
}

// dockerfilePorts returns the listener ports the image's ENV sets.
func dockerfilePorts(t *testing.T) (api, admin string) {
	t.Helper()
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`SLUICE_ADDR=[^ ]*:(\d+)`).FindSubmatch(b); m != nil {
		api = string(m[1])
	}
	if m := regexp.MustCompile(`SLUICE_ADMIN_ADDR=[^ ]*:(\d+)`).FindSubmatch(b); m != nil {
		admin = string(m[1])
	}
	if api == "" || admin == "" {
		t.Fatal("the Dockerfile sets no SLUICE_ADDR / SLUICE_ADMIN_ADDR port")
	}
	return api, admin
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if n := strings.Count(s, "\nFROM ") + map[bool]int{true: 1}[strings.HasPrefix(s, "FROM ")]; n < 2 {
		t.Errorf("not multi-stage: %d FROM lines", n)
	}
	for _, want := range []string{"CGO_ENABLED=0", "USER nonroot", "HEALTHCHECK", `"healthcheck"`, "distroless/static"} {
		if !strings.Contains(s, want) {
			t.Errorf("the Dockerfile lacks %q", want)
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^COPY (?:--from=\S+ )?(.+) \S+$`).FindAllStringSubmatch(s, -1) {
		if strings.Contains(m[0], "--from=") {
			continue
		}
		for _, src := range strings.Fields(m[1]) {
			mustExist(t, filepath.Join("..", src), "Dockerfile COPY "+src)
		}
	}
}

func TestCompose(t *testing.T) {
	c := readYAML(t, "compose.yaml")
	reads := sluiceReads(t)
	api, admin := dockerfilePorts(t)
	services, _ := c["services"].(m)
	for _, name := range []string{"sluice", "redis", "clickhouse", "prometheus", "grafana"} {
		if services[name] == nil {
			t.Fatalf("compose has no %s service", name)
		}
	}
	named, _ := c["volumes"].(m)
	// mounts maps a container path of each service to the host path.
	mounts := map[string]map[string]string{}
	for name, svc := range services {
		mounts[name] = map[string]string{}
		if ctx := str(svc, "build", "context"); ctx != "" {
			mustExist(t, ctx, name+" build context")
			mustExist(t, filepath.Join(ctx, str(svc, "build", "dockerfile")), name+" dockerfile")
		}
		for _, v := range list(svc, "volumes") {
			parts := strings.Split(v.(string), ":")
			src, dst := parts[0], parts[1]
			if strings.HasPrefix(src, ".") {
				mustExist(t, src, name+" volume "+src)
				mounts[name][dst] = src
			} else if _, ok := named[src]; !ok {
				t.Errorf("%s: volume %q is not declared", name, src)
			}
		}
		deps := get(svc, "depends_on")
		var depNames []string
		switch d := deps.(type) {
		case []any:
			for _, x := range d {
				depNames = append(depNames, x.(string))
			}
		case m:
			for k := range d {
				depNames = append(depNames, k)
			}
		}
		for _, d := range depNames {
			if services[d] == nil {
				t.Errorf("%s depends on unknown service %s", name, d)
			}
		}
	}
	hostPath := func(svc, p string) string {
		for dst, src := range mounts[svc] {
			if p == dst {
				return src
			}
			if rest, ok := strings.CutPrefix(p, dst+"/"); ok {
				return filepath.Join(src, rest)
			}
		}
		return ""
	}
	env, _ := get(services["sluice"], "environment").(m)
	for k, v := range env {
		checkEnvRead(t, reads, "compose sluice", k)
		val, _ := v.(string)
		if strings.HasPrefix(val, "/etc/") {
			if hp := hostPath("sluice", val); hp == "" {
				t.Errorf("sluice %s=%s is in no mounted directory", k, val)
			} else {
				mustExist(t, hp, "sluice "+k)
			}
		}
		if strings.HasSuffix(k, "_ADDR") {
			host, _, err := net.SplitHostPort(val)
			if err != nil || services[host] == nil {
				t.Errorf("sluice %s=%s names no service", k, val)
			}
		}
	}
	var ports []string
	for _, p := range list(services["sluice"], "ports") {
		s := p.(string)
		ports = append(ports, s[strings.LastIndex(s, ":")+1:])
	}
	if strings.Join(ports, ",") != api+","+admin {
		t.Errorf("sluice publishes container ports %v; the image listens on %s and %s", ports, api, admin)
	}
	// Prometheus scrapes the admin port and loads mounted rules.
	prom := readYAML(t, "prometheus/prometheus.yml")
	for _, sc := range list(prom, "scrape_configs") {
		for _, target := range list(sc, "static_configs", 0, "targets") {
			host, port, _ := net.SplitHostPort(target.(string))
			if services[host] == nil || (host == "sluice" && port != admin) {
				t.Errorf("prometheus target %v is not sluice's admin listener", target)
			}
		}
	}
	for _, rf := range list(prom, "rule_files") {
		if hp := hostPath("prometheus", rf.(string)); hp == "" {
			t.Errorf("prometheus rule file %v is not mounted", rf)
		}
	}
	// Grafana: the provisioned dashboards directory is the mounted dashboards/.
	prov := readYAML(t, "grafana/provisioning/dashboards/sluice.yaml")
	dir := hostPath("grafana", str(prov, "providers", 0, "options", "path"))
	if dir == "" {
		t.Fatal("grafana's dashboard path is not mounted")
	}
	if js, _ := filepath.Glob(filepath.Join(dir, "*.json")); len(js) == 0 {
		t.Errorf("no dashboards in %s", dir)
	}
	if hostPath("grafana", "/etc/grafana/provisioning") == "" {
		t.Error("grafana's provisioning is not mounted")
	}
	ds := readYAML(t, "grafana/provisioning/datasources/prometheus.yaml")
	if u := str(ds, "datasources", 0, "url"); !strings.Contains(u, "//prometheus:9090") {
		t.Errorf("grafana data source %q is not the prometheus service", u)
	}
}

func TestKubernetes(t *testing.T) {
	reads := sluiceReads(t)
	api, admin := dockerfilePorts(t)
	objs := map[string]m{} // kind/name
	files, _ := filepath.Glob("k8s/*.yaml")
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			for _, r := range list(readYAML(t, f), "resources") {
				mustExist(t, filepath.Join("k8s", r.(string)), "kustomization resource")
			}
			continue
		}
		for _, d := range readDocs(t, f) {
			objs[str(d, "kind")+"/"+str(d, "metadata", "name")] = d
		}
	}
	dep := objs["Deployment/sluice"]
	if dep == nil {
		t.Fatal("no Deployment sluice")
	}
	if r, _ := get(dep, "spec", "replicas").(int); r < 2 {
		t.Errorf("replicas %d; want at least 2", r)
	}
	labels, _ := get(dep, "spec", "template", "metadata", "labels").(m)
	selects := func(what string, sel any) {
		sm, _ := sel.(m)
		if len(sm) == 0 {
			t.Errorf("%s has no selector", what)
		}
		for k, v := range sm {
			if labels[k] != v {
				t.Errorf("%s selects %s=%v, which the pods do not carry", what, k, v)
			}
		}
	}
	selects("deployment", get(dep, "spec", "selector", "matchLabels"))
	c := get(dep, "spec", "template", "spec", "containers", 0)
	portNames := map[string]string{}
	for _, p := range list(c, "ports") {
		portNames[str(p, "name")] = fmt.Sprint(get(p, "containerPort"))
	}
	if portNames["api"] != api || portNames["admin"] != admin {
		t.Errorf("container ports %v; the image listens on %s and %s", portNames, api, admin)
	}
	for _, probe := range []string{"readinessProbe", "livenessProbe"} {
		if _, ok := portNames[str(c, probe, "httpGet", "port")]; !ok {
			t.Errorf("%s uses an unknown port", probe)
		}
	}
	if str(c, "readinessProbe", "httpGet", "path") != "/readyz" || str(c, "livenessProbe", "httpGet", "path") != "/healthz" {
		t.Error("probes must use /readyz and /healthz")
	}
	// Volumes: config maps exist; the policies path is a mounted file.
	volCM := map[string]string{}
	for _, v := range list(dep, "spec", "template", "spec", "volumes") {
		if cm := str(v, "configMap", "name"); cm != "" {
			if objs["ConfigMap/"+cm] == nil {
				t.Errorf("volume %s: no ConfigMap %s", str(v, "name"), cm)
			}
			volCM[str(v, "name")] = cm
		}
	}
	mountCM := map[string]string{}
	for _, vm := range list(c, "volumeMounts") {
		if str(vm, "subPath") != "" {
			t.Errorf("mount %s uses subPath: its file would never be updated", str(vm, "name"))
		}
		if cm, ok := volCM[str(vm, "name")]; ok {
			mountCM[str(vm, "mountPath")] = cm
		}
	}
	for _, e := range list(c, "env") {
		name := str(e, "name")
		checkEnvRead(t, reads, "deployment", name)
		if ref := get(e, "valueFrom", "secretKeyRef"); ref != nil {
			sec := objs["Secret/"+str(ref, "name")]
			if get(sec, "stringData", str(ref, "key")) == nil && get(sec, "data", str(ref, "key")) == nil {
				t.Errorf("env %s: no secret %s key %s", name, str(ref, "name"), str(ref, "key"))
			}
		}
		val := str(e, "value")
		if name == "SLUICE_POLICIES" {
			dir, file := filepath.Dir(val), filepath.Base(val)
			cm := objs["ConfigMap/"+mountCM[dir]]
			data, _ := get(cm, "data", file).(string)
			if data == "" {
				t.Fatalf("SLUICE_POLICIES=%s is no file of a mounted ConfigMap", val)
			}
			if _, err := policy.Parse("configmap policies.yaml", []byte(data), func(n string) (string, bool) { return "set-" + n, true }); err != nil {
				t.Errorf("the ConfigMap's policies do not compile: %v", err)
			}
		}
		if strings.HasSuffix(name, "_ADDR") {
			host, port, err := net.SplitHostPort(val)
			svc := objs["Service/"+host]
			found := false
			for _, p := range list(svc, "spec", "ports") {
				found = found || fmt.Sprint(get(p, "port")) == port
			}
			if err != nil || !found {
				t.Errorf("env %s=%s names no service port", name, val)
			}
		}
	}
	svc := objs["Service/sluice"]
	selects("service", get(svc, "spec", "selector"))
	for _, p := range list(svc, "spec", "ports") {
		if _, ok := portNames[str(p, "targetPort")]; !ok {
			t.Errorf("service port %v targets an unknown container port", get(p, "name"))
		}
	}
	pdb := objs["PodDisruptionBudget/sluice"]
	selects("pdb", get(pdb, "spec", "selector", "matchLabels"))
	if n, _ := get(pdb, "spec", "minAvailable").(int); n < 1 {
		t.Error("the PodDisruptionBudget keeps no replica")
	}
	hpa := objs["HorizontalPodAutoscaler/sluice"]
	if str(hpa, "spec", "scaleTargetRef", "kind") != "Deployment" || objs["Deployment/"+str(hpa, "spec", "scaleTargetRef", "name")] == nil {
		t.Error("the HPA scales no Deployment of these files")
	}
	if n, _ := get(hpa, "spec", "minReplicas").(int); n < 2 {
		t.Error("the HPA may scale below two replicas")
	}
	src := ""
	goFiles, _ := filepath.Glob("../proxy/*.go")
	for _, f := range goFiles {
		b, _ := os.ReadFile(f)
		src += string(b)
	}
	for _, met := range list(hpa, "spec", "metrics") {
		if name := str(met, "pods", "metric", "name"); name != "" && !strings.Contains(src, `"`+name+`"`) {
			t.Errorf("the HPA scales on %s, which Sluice does not export", name)
		}
	}
	compose := readYAML(t, "compose.yaml")
	if img := str(c, "image"); img != str(compose, "services", "sluice", "image") {
		t.Errorf("image %q differs from compose's", img)
	}
}

// k8sObjects reads every object of deploy/k8s by kind/name.
func k8sObjects(t *testing.T) map[string]m {
	t.Helper()
	objs := map[string]m{}
	files, _ := filepath.Glob("k8s/*.yaml")
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		for _, d := range readDocs(t, f) {
			objs[str(d, "kind")+"/"+str(d, "metadata", "name")] = d
		}
	}
	return objs
}

func envValue(c any, name string) string {
	for _, e := range list(c, "env") {
		if str(e, "name") == name {
			return str(e, "value")
		}
	}
	return ""
}

// TestKubernetesOperations checks the on-call points: the HPA's signal and
// ceiling, the shutdown delay, the bounds of the transcripts volume, the
// admin port's own Service and its NetworkPolicy, and the first request's key.
func TestKubernetesOperations(t *testing.T) {
	objs := k8sObjects(t)
	dep := objs["Deployment/sluice"]
	c := get(dep, "spec", "template", "spec", "containers", 0)
	cfg, err := config.Parse("sluice.yaml (embedded)", configs.Sluice, func(n string) (string, bool) {
		v := envValue(c, n)
		return v, v != ""
	})
	if err != nil {
		t.Fatalf("the embedded config with the deployment's env: %v", err)
	}

	// HPA: scales on the active gauge (not in flight, which counts requests
	// waiting for the provider), at most the policy's replicas.
	hpa := objs["HorizontalPodAutoscaler/sluice"]
	var podMetrics []string
	for _, met := range list(hpa, "spec", "metrics") {
		if n := str(met, "pods", "metric", "name"); n != "" {
			podMetrics = append(podMetrics, n)
		}
	}
	if len(podMetrics) != 1 || podMetrics[0] != "sluice_requests_active" {
		t.Errorf("the HPA scales on pod metrics %v; want sluice_requests_active only", podMetrics)
	}
	cm := objs["ConfigMap/sluice-policies"]
	pol, err := policy.Parse("configmap", []byte(str(cm, "data", "policies.yaml")), func(n string) (string, bool) { return "k-" + n, true })
	if err != nil {
		t.Fatal(err)
	}
	if mx, _ := get(hpa, "spec", "maxReplicas").(int); mx < 2 || int64(mx) > pol.Replicas {
		t.Errorf("HPA maxReplicas %d; want 2..%d (the policy's replicas)", mx, pol.Replicas)
	}

	// Shutdown: a delay for the endpoint's removal, and a grace period that
	// covers delay, drain and the sink's flush.
	if cfg.Server.ShutdownDelay < 3*time.Second {
		t.Errorf("server.shutdown_delay %s in the deployment; want a few seconds for the endpoint's removal", cfg.Server.ShutdownDelay)
	}
	grace, _ := get(dep, "spec", "template", "spec", "terminationGracePeriodSeconds").(int)
	need := cfg.Server.ShutdownDelay + cfg.Server.ShutdownTimeout + cfg.Transcripts.WriteTimeout
	if time.Duration(grace)*time.Second <= need {
		t.Errorf("terminationGracePeriodSeconds %d; want more than delay+drain+flush = %s", grace, need)
	}

	// Transcripts volume: rotated files, a file count cap and the spool's
	// cap fit the emptyDir (the file being written may pass its size by
	// one batch).
	home := ""
	for _, vm := range list(c, "volumeMounts") {
		if str(vm, "mountPath") == "/home/nonroot" {
			home = str(vm, "name")
		}
	}
	var limit int64
	for _, v := range list(dep, "spec", "template", "spec", "volumes") {
		if str(v, "name") == home {
			limit = quantity(t, str(v, "emptyDir", "sizeLimit"))
		}
	}
	j, sp := cfg.Transcripts.JSONL, cfg.Transcripts.Spool
	if j.MaxFiles <= 0 || j.MaxFileBytes <= 0 || sp.MaxBytes <= 0 {
		t.Fatalf("transcripts unbounded on disk: jsonl %+v, spool max_bytes %d", j, sp.MaxBytes)
	}
	used := j.MaxFileBytes*int64(j.MaxFiles+1) + int64(cfg.Transcripts.BatchBytes) + sp.MaxBytes + sp.SegmentBytes
	if limit == 0 || used > limit*9/10 {
		t.Errorf("transcripts may use %d bytes of a %d-byte volume; want at most 90%%", used, limit)
	}
	t.Logf("transcripts volume: at most %d MiB of %d MiB", used>>20, limit>>20)

	// The admin port has its own Service; the API Service does not carry it.
	for _, p := range list(objs["Service/sluice"], "spec", "ports") {
		if str(p, "targetPort") != "api" {
			t.Errorf("the API Service exposes port %v", get(p, "name"))
		}
	}
	adm := list(objs["Service/sluice-admin"], "spec", "ports")
	if len(adm) != 1 || str(adm[0], "targetPort") != "admin" {
		t.Errorf("Service sluice-admin ports %v; want the admin port only", adm)
	}

	// NetworkPolicy: the API open, the admin port only from monitoring.
	np := objs["NetworkPolicy/sluice"]
	if np == nil {
		t.Fatal("no NetworkPolicy sluice")
	}
	for k, v := range get(np, "spec", "podSelector", "matchLabels").(m) {
		if get(dep, "spec", "template", "metadata", "labels", k) != v {
			t.Errorf("the NetworkPolicy selects %s=%v, which the pods do not carry", k, v)
		}
	}
	apiOpen, adminFrom := false, []string{}
	for _, rule := range list(np, "spec", "ingress") {
		for _, p := range list(rule, "ports") {
			switch str(p, "port") {
			case "api":
				apiOpen = apiOpen || list(rule, "from") == nil
			case "admin":
				if list(rule, "from") == nil {
					adminFrom = append(adminFrom, "everyone")
				}
				for _, f := range list(rule, "from") {
					adminFrom = append(adminFrom, str(f, "namespaceSelector", "matchLabels", "kubernetes.io/metadata.name"))
				}
			default:
				t.Errorf("the NetworkPolicy opens port %v", get(p, "port"))
			}
		}
	}
	if !apiOpen || len(adminFrom) != 1 || adminFrom[0] != "monitoring" {
		t.Errorf("NetworkPolicy: api open %v, admin from %v; want the API open and admin from monitoring only", apiOpen, adminFrom)
	}

	// The first request: the demo key of the secret is a key of the policy.
	key := ""
	for _, e := range list(c, "env") {
		if str(e, "name") == "SLUICE_DEMO_KEY" {
			key = str(objs["Secret/sluice"], "stringData", str(e, "valueFrom", "secretKeyRef", "key"))
		}
	}
	if key == "" || !strings.Contains(str(cm, "data", "policies.yaml"), "key_env: SLUICE_DEMO_KEY") {
		t.Error("no documented demo key: the first request would be a 401")
	}
	b, _ := os.ReadFile("k8s/deployment.yaml")
	if !strings.Contains(string(b), "Bearer "+key) {
		t.Errorf("deployment.yaml's first-request curl does not use the secret's demo key %q", key)
	}

	// Compose: the first request's key has a documented default.
	compose := readYAML(t, "compose.yaml")
	cb, _ := os.ReadFile("compose.yaml")
	dk := regexp.MustCompile(`^\$\{SLUICE_DEMO_KEY:-(\S+)\}$`).FindStringSubmatch(str(compose, "services", "sluice", "environment", "SLUICE_DEMO_KEY"))
	if dk == nil || !strings.Contains(string(cb), "Bearer "+dk[1]) {
		t.Error("compose.yaml: SLUICE_DEMO_KEY has no default documented in a curl line")
	}
}

// quantity parses a Kubernetes size such as 2Gi or 512Mi.
func quantity(t *testing.T, q string) int64 {
	t.Helper()
	units := map[string]int64{"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "": 1}
	for u, f := range units {
		if u != "" && strings.HasSuffix(q, u) {
			var n int64
			if _, err := fmt.Sscan(strings.TrimSuffix(q, u), &n); err != nil {
				t.Fatalf("size %q: %v", q, err)
			}
			return n * f
		}
	}
	var n int64
	if _, err := fmt.Sscan(q, &n); err != nil {
		t.Fatalf("size %q: %v", q, err)
	}
	return n
}

var update = flag.Bool("update", false, "rewrite k8s/monitoring/prometheusrule.yaml from ../dashboards/alerts.yaml")

// TestPrometheusOperator checks the ServiceMonitor selects the admin Service
// by its port, and that the PrometheusRule carries the same groups as
// dashboards/alerts.yaml (go test ./deploy -run PrometheusOperator -update
// rewrites it after the alerts change).
func TestPrometheusOperator(t *testing.T) {
	objs := k8sObjects(t)
	sm := readYAML(t, "k8s/monitoring/servicemonitor.yaml")
	adm := objs["Service/sluice-admin"]
	for k, v := range get(sm, "spec", "selector", "matchLabels").(m) {
		if get(adm, "metadata", "labels", k) != v {
			t.Errorf("the ServiceMonitor selects %s=%v, which Service sluice-admin does not carry", k, v)
		}
	}
	if get(objs["Service/sluice"], "metadata", "labels", "app.kubernetes.io/component") == "admin" {
		t.Error("the ServiceMonitor would also select the API Service")
	}
	port := str(sm, "spec", "endpoints", 0, "port")
	if ports := list(adm, "spec", "ports"); len(ports) != 1 || str(ports[0], "name") != port {
		t.Errorf("the ServiceMonitor scrapes port %q; Service sluice-admin has %v", port, ports)
	}

	alerts := readYAML(t, "../dashboards/alerts.yaml")
	const path = "k8s/monitoring/prometheusrule.yaml"
	if *update {
		out, err := yaml.Marshal(m{"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
			"metadata": m{"name": "sluice", "labels": m{"app.kubernetes.io/name": "sluice"}},
			"spec":     m{"groups": alerts["groups"]}})
		if err != nil {
			t.Fatal(err)
		}
		head := "# Generated from dashboards/alerts.yaml by: go test ./deploy -run PrometheusOperator -update\n"
		if err := os.WriteFile(path, append([]byte(head), out...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pr := readYAML(t, path)
	if str(pr, "kind") != "PrometheusRule" {
		t.Fatalf("%s is no PrometheusRule", path)
	}
	if !reflect.DeepEqual(get(pr, "spec", "groups"), alerts["groups"]) {
		t.Errorf("%s differs from dashboards/alerts.yaml; run go test ./deploy -run PrometheusOperator -update", path)
	}
}
