#!/usr/bin/python3
"""Checks docker-compose.yml against the Compose specification's JSON schema,
and that every environment variable it sets is one the programs read.

    check_compose.py COMPOSE_FILE[+OVERRIDE...] BIN_DIR SCHEMA.json...

For each service, the resolved environment (docker-compose config) is handed
to the service's program with --print-config; each variable must come back
with the value set. A variable no program reads, or reads differently, fails.
"""
import json
import os
import subprocess
import sys

import jsonschema
import yaml


def validate(compose_file, schema_file):
    with open(schema_file) as f:
        schema = json.load(f)
    with open(compose_file) as f:
        document = yaml.safe_load(f)
    # The Compose schema names draft 2019-09 by a URI validators do not all
    # know; validator_for falls back to that draft.
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft201909Validator)
    cls.check_schema(schema)
    errors = sorted(cls(schema).iter_errors(document), key=lambda e: list(e.path))
    for error in errors:
        print(f"{compose_file}: {'/'.join(map(str, error.path))}: {error.message}")
    return not errors


def same_value(wanted, got):
    if wanted == got:
        return True
    try:
        return float(wanted) == float(got)
    except ValueError:
        return False


def check_environment(compose_files, bin_dir):
    files = [arg for name in compose_files for arg in ("-f", name)]
    resolved = subprocess.run(["docker-compose", *files, "config"], check=True,
                              capture_output=True, text=True).stdout
    services = yaml.safe_load(resolved)["services"]
    ok = True
    for name, service in sorted(services.items()):
        command = service.get("command")
        environment = {k: "" if v is None else str(v)
                       for k, v in (service.get("environment") or {}).items()}
        if not command:
            print(f"{name}: no command")
            ok = False
            continue
        program = os.path.join(bin_dir, command[0])
        run = subprocess.run([program, *command[1:], "--print-config"],
                             env={"PATH": "/usr/bin:/bin", **environment},
                             capture_output=True, text=True)
        if run.returncode != 0:
            print(f"{name}: {' '.join(command)} --print-config failed: {run.stderr.strip()}")
            ok = False
            continue
        effective = dict(line.split("=", 1) for line in run.stdout.splitlines() if "=" in line)
        for key, value in sorted(environment.items()):
            if key not in effective:
                print(f"{name}: {key} is set but {command[0]} does not read it")
                ok = False
            elif not same_value(value, effective[key]):
                print(f"{name}: {key}={value!r} but {command[0]} took {effective[key]!r}")
                ok = False
            else:
                print(f"{name}: {key}={value!r} read by {command[0]}")
    return ok


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    compose_files, bin_dir, schemas = sys.argv[1].split("+"), sys.argv[2], sys.argv[3:]
    ok = all([validate(name, schema) for name in compose_files for schema in schemas])
    ok = check_environment(compose_files, bin_dir) and ok
    print("compose file: OK" if ok else "compose file: FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
