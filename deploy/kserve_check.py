"""Validates KServe resources offline: every field of a ClusterServingRuntime, ServingRuntime or
InferenceService is checked, recursively, against the typed models of KServe's own Python SDK
(`kserve` on PyPI, generated from KServe's OpenAPI) and, for the Kubernetes types inside them
(containers, resources, ...), of the `kubernetes` client: unknown fields and wrong types fail.
On top, what the schema cannot say: required fields, known protocol versions, and that an
InferenceService's runtime is defined in the files given and supports its model format and
protocol.

    python deploy/kserve_check.py FILE.yaml...      (the venv of .ci/install-k8s-tools.sh)
"""
import importlib
import re
import sys
import types

import yaml

# kserve/__init__ imports the model server (FastAPI, gRPC, ...); only the generated models are needed.
_site = next(p for p in sys.path if p.endswith("site-packages"))
_pkg = types.ModuleType("kserve")
_pkg.__path__ = [_site + "/kserve"]
sys.modules["kserve"] = _pkg
kserve_models = importlib.import_module("kserve.models")
import kubernetes.client.models as k8s_models  # noqa: E402

KINDS = {
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
}
PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}
SCALARS = {"str": str, "int": int, "bool": bool, "float": (int, float)}


def model_class(name):
    return getattr(kserve_models, name, None) or getattr(k8s_models, name, None)


def walk(value, typ, path, errors):
    """Checks `value` against the SDK type name `typ` (`list[X]`, `dict(str, X)`, `List[X]`, `Dict[str, X]`, a model, a scalar)."""
    if value is None:
        return
    if typ.lower().startswith("list["):
        if not isinstance(value, list):
            return errors.append(f"{path}: expected a list, got {value!r}")
        for i, item in enumerate(value):
            walk(item, typ[5:-1], f"{path}[{i}]", errors)
    elif typ.lower().startswith(("dict(", "dict[")):
        if not isinstance(value, dict):
            return errors.append(f"{path}: expected a map, got {value!r}")
        inner = re.match(r"dict[(\[][^,]+, (.*)[)\]]$", typ, re.IGNORECASE).group(1)
        for k, item in value.items():
            walk(item, inner, f"{path}.{k}", errors)
    elif typ in SCALARS:
        if not isinstance(value, SCALARS[typ]) or (typ != "bool" and isinstance(value, bool)):
            errors.append(f"{path}: expected {typ}, got {value!r}")
    elif typ in ("object", "datetime", "date"):
        pass
    else:
        cls = model_class(typ)
        if cls is None:
            return errors.append(f"{path}: the SDKs know no type {typ}")
        if not isinstance(value, dict):
            return errors.append(f"{path}: expected an object ({typ}), got {value!r}")
        fields = {json_name: attr for attr, json_name in cls.attribute_map.items()}
        for k, item in value.items():
            if k not in fields:
                errors.append(f"{path}.{k}: unknown field of {typ}")
            else:
                walk(item, cls.openapi_types[fields[k]], f"{path}.{k}", errors)


def need(doc, dotted, errors, where):
    cur = doc
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur or cur[part] in (None, "", [], {}):
            errors.append(f"{where}: {dotted} is required")
            return None
        cur = cur[part]
    return cur


def main(files):
    docs = [d for f in files for d in yaml.safe_load_all(open(f)) if d]
    errors, runtimes = [], {}
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key not in KINDS:
            continue
        where = f"{doc['kind']}/{doc.get('metadata', {}).get('name', '?')}"
        walk(doc, KINDS[key], where, errors)
        need(doc, "metadata.name", errors, where)
        if doc["kind"] in ("ClusterServingRuntime", "ServingRuntime"):
            runtimes[doc["metadata"]["name"]] = doc["spec"]
            for i, c in enumerate(need(doc, "spec.containers", errors, where) or []):
                for field in ("name", "image"):
                    if not c.get(field):
                        errors.append(f"{where}: spec.containers[{i}].{field} is required")
            for i, fmt in enumerate(need(doc, "spec.supportedModelFormats", errors, where) or []):
                if not fmt.get("name"):
                    errors.append(f"{where}: spec.supportedModelFormats[{i}].name is required")
            for p in doc["spec"].get("protocolVersions", []):
                if p not in PROTOCOLS:
                    errors.append(f"{where}: protocol version {p!r} is not one of {sorted(PROTOCOLS)}")
        print(f"checked {where}")
    for doc in docs:
        if (doc.get("apiVersion"), doc.get("kind")) != ("serving.kserve.io/v1beta1", "InferenceService"):
            continue
        where = f"InferenceService/{doc['metadata']['name']}"
        model = need(doc, "spec.predictor.model", errors, where) or {}
        fmt = need(model, "modelFormat.name", errors, where + " spec.predictor.model")
        name = model.get("runtime")
        if name is None:
            continue
        spec = runtimes.get(name)
        if spec is None:
            errors.append(f"{where}: runtime {name!r} is not defined in {files}")
            continue
        if fmt not in [f.get("name") for f in spec.get("supportedModelFormats", [])]:
            errors.append(f"{where}: runtime {name!r} does not support model format {fmt!r}")
        protocol = model.get("protocolVersion", "v1")
        if protocol not in spec.get("protocolVersions", ["v1"]):
            errors.append(f"{where}: runtime {name!r} does not speak protocol {protocol!r}")
    print("\n".join(errors) or "KServe resources: OK")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
