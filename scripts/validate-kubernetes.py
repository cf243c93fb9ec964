#!/usr/bin/env python3
"""Validates Kubernetes objects against the OpenAPI schema of a Kubernetes release (strict: an
unknown field is an error), with the schemas the `kubernetes-validate` package ships.

    python scripts/validate-kubernetes.py [--version 1.37.0] PATH...

PATH: a YAML file (several documents allowed), a JSON file (one object, or a list of them), or
a directory of such files. Prints one line per object; exits 1 if any is invalid. Use the
readers' virtualenv (`scripts/install-readers.sh` prints its python).
"""
import json
import pathlib
import sys

import kubernetes_validate
import yaml


def documents(path):
    text = path.read_text()
    if path.suffix == ".json":
        data = json.loads(text)
        return data if isinstance(data, list) else [data]
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    # Pod templates shipped inside a ConfigMap (`--k8s-pod-template`) are objects too.
    for d in list(docs):
        if d.get("kind") == "ConfigMap":
            for key, value in (d.get("data") or {}).items():
                if key.endswith((".yaml", ".yml")):
                    inner = yaml.safe_load(value)
                    if isinstance(inner, dict) and "kind" in inner:
                        inner.setdefault("metadata", {}).setdefault("name", f"{d['metadata']['name']}/{key}")
                        docs.append(inner)
    return docs


def main(argv):
    version = kubernetes_validate.latest_version()
    if argv[:1] == ["--version"]:
        version, argv = argv[1], argv[2:]
    files = []
    for arg in argv:
        p = pathlib.Path(arg)
        files += sorted(x for x in p.rglob("*") if x.suffix in (".yaml", ".yml", ".json")) if p.is_dir() else [p]
    if not files:
        print("no files to validate", file=sys.stderr)
        return 2
    bad = 0
    count = 0
    for f in files:
        for doc in documents(f):
            count += 1
            name = f"{doc.get('kind', '?')}/{doc.get('metadata', {}).get('name', '?')}"
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                print(f"{f}: {name}: valid (Kubernetes {version})")
            except kubernetes_validate.ValidationError as e:
                bad += 1
                where = "/".join(str(p) for p in e.path)
                print(f"{f}: {name}: INVALID at {where or '(root)'}: {e.message}")
            except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
                bad += 1
                print(f"{f}: {name}: no schema: {e}")
    print(f"{count - bad} of {count} objects valid")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
