"""Checks of deploy/ that schemas cannot make: the parts must agree with each other and with Apus.

Run by Tests/deploy/run.sh in .venv-deploy (PyYAML, jsonschema):

    python Tests/deploy/check_manifests.py

- ServiceMonitor against schemas/servicemonitor-v1.json, the prometheus-adapter config inside its
  ConfigMap against schemas/prometheus-adapter-config.json (no Kubernetes schema covers either);
- selectors and named ports line up (Service -> pod labels and port `http`, ServiceMonitor ->
  Service labels and port name, PDB and HPA -> the Deployment);
- the metrics the HPA scales on are served by an adapter rule and exported by Apus (its name is a
  metric of Sources/ApusServer);
- probes: liveness /health, readiness /health/ready, on the port apus listens on;
- stopping: terminationGracePeriodSeconds covers the preStop sleep plus --drain-timeout with a
  margin; compose's stop_grace_period covers --drain-timeout;
- memory: the limit holds --kv-cache-memory plus the default models' files plus an allowance for
  the process; requests equal limits (Guaranteed QoS); --threads follows the CPU limit.
Exit status 0 when every check passes, 1 otherwise (each failure printed).
"""

import json
import os
import re
import sys

import jsonschema
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
K8S = os.path.join(ROOT, "deploy", "kubernetes")
# What apus needs besides the KV budget and the mapped model files: runtime, tokenizers,
# activations of a --max-batch-tokens step, the embedding worker (measured: docs/deploy.md).
PROCESS_ALLOWANCE = 384 << 20
# Seconds between SIGTERM's drain deadline and the kubelet's SIGKILL: exit and log flushing.
EXIT_MARGIN = 5

failures = []


def check(ok, message):
    print(("ok    " if ok else "FAIL  ") + message)
    if not ok:
        failures.append(message)


def load(name):
    with open(os.path.join(K8S, name), encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    return docs[0] if len(docs) == 1 else docs


def schema(name):
    with open(os.path.join(HERE, "schemas", name), encoding="utf-8") as f:
        return json.load(f)


def validate(instance, schema_name, what):
    validator = jsonschema.Draft202012Validator(schema(schema_name))
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    for e in errors:
        print("      %s: %s" % ("/".join(str(p) for p in e.path) or "(top)", e.message))
    check(not errors, "%s matches %s" % (what, schema_name))


def byte_count(text):
    """Kubernetes quantities (Gi, Mi, G, M) and apus's --kv-cache-memory (K, M, G: powers of 1024)."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|K|M|G|T|k)?i?B?", str(text))
    if not m:
        raise ValueError("not a byte count: %r" % text)
    scale = {None: 1, "K": 1 << 10, "k": 1 << 10, "Ki": 1 << 10, "M": 1 << 20, "Mi": 1 << 20,
             "G": 1 << 30, "Gi": 1 << 30, "T": 1 << 40, "Ti": 1 << 40}
    return int(m.group(1)) * scale[m.group(2)]


def args_dict(args):
    """--name=value and --name value pairs of a command line."""
    out = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            if "=" in a:
                k, v = a[2:].split("=", 1)
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                k, v = a[2:], args[i + 1]
                i += 1
            else:
                k, v = a[2:], True
            out[k] = v
        i += 1
    return out


def duration_seconds(text):
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", text)
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def main():
    deployment = load("deployment.yaml")
    service = load("service.yaml")
    hpa = load("hpa.yaml")
    pdb = load("pdb.yaml")
    monitor = load("servicemonitor.yaml")
    adapter = load("prometheus-adapter-rules.yaml")
    kustomization = load("kustomization.yaml")

    # --- CRD and adapter config schemas -------------------------------------------------------
    validate(monitor, "servicemonitor-v1.json", "servicemonitor.yaml")
    adapter_config = yaml.safe_load(adapter["data"]["config.yaml"])
    validate(adapter_config, "prometheus-adapter-config.json", "the adapter's config.yaml")
    broken = json.loads(json.dumps(monitor))
    broken["spec"]["endpoints"][0]["intervall"] = broken["spec"]["endpoints"][0].pop("interval", "15s")
    check(not jsonschema.Draft202012Validator(schema("servicemonitor-v1.json")).is_valid(broken),
          "a ServiceMonitor with a misspelt field is rejected (the schema is strict)")

    # --- kustomization lists every manifest -------------------------------------------------
    listed = set(kustomization.get("resources", []))
    present = {f for f in os.listdir(K8S) if f.endswith(".yaml") and f != "kustomization.yaml"}
    check(listed == present, "kustomization.yaml lists every manifest (%s)" % ", ".join(sorted(present)))

    # --- selectors and ports ------------------------------------------------------------------
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    container = pod["spec"]["containers"][0]
    args = args_dict(container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    check(matches(deployment["spec"]["selector"], pod_labels), "the Deployment's selector matches its pods")
    check(all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items()),
          "the Service selects the Deployment's pods")
    check(ports.get("http") == int(args.get("port", 8080)),
          "container port `http` is the port apus listens on (%s)" % args.get("port"))
    check(args.get("host") in ("0.0.0.0", "::"), "apus listens on all addresses in the pod")
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    check(all(p["targetPort"] in ports or p["targetPort"] in ports.values() for p in service_ports.values()),
          "the Service's targetPorts are container ports")
    check(matches(monitor["spec"]["selector"], service["metadata"]["labels"]),
          "the ServiceMonitor selects the Service")
    check(all(e.get("port") in service_ports for e in monitor["spec"]["endpoints"]),
          "the ServiceMonitor's endpoint ports are Service port names")
    check(any(e.get("path") == "/metrics" for e in monitor["spec"]["endpoints"]),
          "the ServiceMonitor scrapes /metrics")
    check(matches(pdb["spec"]["selector"], pod_labels), "the PodDisruptionBudget selects the Deployment's pods")
    target = hpa["spec"]["scaleTargetRef"]
    check(target["kind"] == "Deployment" and target["name"] == deployment["metadata"]["name"],
          "the HPA scales the Deployment")
    check(hpa["spec"]["minReplicas"] >= 2 and pdb["spec"].get("maxUnavailable", 1) < hpa["spec"]["minReplicas"],
          "at least one replica stays up through a voluntary disruption (minReplicas %d, maxUnavailable %s)"
          % (hpa["spec"]["minReplicas"], pdb["spec"].get("maxUnavailable")))

    # --- the HPA's custom metrics: served by the adapter, exported by apus -------------------
    sources = ""
    for dirpath, _, files in os.walk(os.path.join(ROOT, "Sources", "ApusServer")):
        for f in files:
            if f.endswith(".swift"):
                with open(os.path.join(dirpath, f), encoding="utf-8") as fh:
                    sources += fh.read()
    served = {}
    for rule in adapter_config.get("rules", []):
        series = re.match(r"\s*'?([a-zA-Z_:][a-zA-Z0-9_:]*)", rule["seriesQuery"]).group(1)
        name = rule.get("name", {})
        exposed = re.sub(name.get("matches", "^(.*)$"), name.get("as", r"\g<0>").replace("$1", r"\1"), series) \
            if name else series
        served[exposed] = (series, rule)
    custom = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    check(bool(custom), "the HPA scales on a custom per-pod metric (%s)" % ", ".join(custom))
    for metric in custom:
        check(metric in served, "the adapter serves %s" % metric)
        if metric in served:
            series, rule = served[metric]
            check(series.startswith("apus_") and ('"%s"' % series[len("apus_"):]) in sources,
                  "apus exports %s (a metric name in Sources/ApusServer)" % series)
            overrides = (rule.get("resources") or {}).get("overrides", {})
            check({"namespace", "pod"} <= {v["resource"] for v in overrides.values()},
                  "the adapter maps %s to pods and namespaces" % series)

    # --- probes -------------------------------------------------------------------------------
    live = container["livenessProbe"]["httpGet"]
    ready = container["readinessProbe"]["httpGet"]
    check(live["path"] == "/health" and live["port"] in ("http", ports["http"]), "liveness probe: GET /health")
    check(ready["path"] == "/health/ready" and ready["port"] in ("http", ports["http"]),
          "readiness probe: GET /health/ready")

    # --- stopping -----------------------------------------------------------------------------
    drain = float(args.get("drain-timeout", 30))
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_stop_secs = float(pre_stop[1]) if len(pre_stop) == 2 and pre_stop[0] == "sleep" else 0.0
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    check(grace >= pre_stop_secs + drain + EXIT_MARGIN,
          "terminationGracePeriodSeconds %d >= preStop %gs + --drain-timeout %gs + %ds to exit"
          % (grace, pre_stop_secs, drain, EXIT_MARGIN))
    check(grace <= pre_stop_secs + drain + 30,
          "terminationGracePeriodSeconds %d is not far above what a drain needs (rollouts wait for it)" % grace)

    # --- resources ------------------------------------------------------------------------------
    resources = container["resources"]
    check(resources.get("requests") == resources.get("limits"), "requests equal limits (Guaranteed QoS)")
    with open(os.path.join(ROOT, "Models", "catalog.json"), encoding="utf-8") as f:
        catalog = json.load(f)
    models = sum(fe["size"] for m in catalog if m.get("default") for fe in m["files"])
    kv = byte_count(args["kv-cache-memory"])
    limit = byte_count(resources["limits"]["memory"])
    need = kv + models + PROCESS_ALLOWANCE
    check(limit >= need, "memory limit %d MiB >= KV %d MiB + models %d MiB + process %d MiB"
          % (limit >> 20, kv >> 20, models >> 20, PROCESS_ALLOWANCE >> 20))
    env = {e["name"]: e for e in container.get("env", [])}
    threads = args.get("threads", "")
    m = re.fullmatch(r"\$\((\w+)\)", str(threads))
    check(bool(m) and env.get(m.group(1), {}).get("valueFrom", {}).get("resourceFieldRef", {}).get("resource")
          == "limits.cpu", "--threads follows the CPU limit (downward API)")

    # --- compose ----------------------------------------------------------------------------
    with open(os.path.join(ROOT, "deploy", "compose.yaml"), encoding="utf-8") as f:
        compose = yaml.safe_load(f)
    svc = compose["services"]["apus"]
    c_args = args_dict(svc.get("command", []))
    c_drain = float(c_args.get("drain-timeout", 30))
    check(duration_seconds(svc.get("stop_grace_period", "10s")) >= c_drain + EXIT_MARGIN,
          "compose stop_grace_period %s >= --drain-timeout %gs + %ds" % (svc.get("stop_grace_period"), c_drain, EXIT_MARGIN))
    check("8080:8080" in [str(p) for p in svc.get("ports", [])], "compose publishes 8080")
    c_mem = byte_count(svc["deploy"]["resources"]["limits"]["memory"].upper().replace("G", "Gi").replace("M", "Mi"))
    c_kv = byte_count(c_args.get("kv-cache-memory", "1G"))
    check(c_mem >= c_kv + models + PROCESS_ALLOWANCE, "compose memory limit holds KV + models + process")

    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    print("all deploy/ consistency checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
