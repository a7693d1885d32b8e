#!/usr/bin/python3
"""Checks docker-compose.yml against the Compose specification's JSON schema,
and that every environment variable it sets is one the programs read.

    check_compose.py COMPOSE_FILE[+OVERRIDE...] BIN_DIR SCHEMA.json...

For each service, the resolved environment (docker-compose config) is handed
to the service's program with --print-config; each variable must come back
with the value set. A variable no program reads, or reads differently, fails.

Where services are replicas of a group (ASYNCQ_PEERS), what the group needs
is checked too: one list on every replica, each its place in it (the host at
ASYNCQ_NODE_ID is the service itself), durable with fsync always on a volume
of its own, one broker key, the replication port (PORT+2) never published,
and every client given every replica and waiting for each.
"""
import json
import os
import re
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


def bind_port(bind):
    """The port of ASYNCQ_BIND (HOST:PORT, tcp://HOST:PORT, :PORT; 5557)."""
    match = re.search(r":(\d+)$", bind or "")
    return int(match.group(1)) if match else 5557


def published_targets(service):
    """(host address, published, container port) of each published port."""
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            yield (port.get("host_ip", ""), str(port.get("published", "")), int(port["target"]))
            continue
        parts = str(port).split("/")[0].rsplit(":", 2)
        target = parts[-1]
        published = parts[-2] if len(parts) >= 2 else ""
        host = parts[0] if len(parts) == 3 else ""
        for number in range(int(target.split("-")[0]), int(target.split("-")[-1]) + 1):
            yield (host, published, number)


def check_replicas(compose_files):
    files = [arg for name in compose_files for arg in ("-f", name)]
    resolved = subprocess.run(["docker-compose", *files, "config"], check=True,
                              capture_output=True, text=True).stdout
    services = yaml.safe_load(resolved)["services"]
    environments = {name: {k: "" if v is None else str(v)
                           for k, v in (service.get("environment") or {}).items()}
                    for name, service in services.items()}
    replicas = sorted(name for name, env in environments.items() if env.get("ASYNCQ_PEERS"))
    if not replicas:
        return True
    ok = True

    def fail(message):
        nonlocal ok
        print(f"replicas: {message}")
        ok = False

    lists = {environments[name]["ASYNCQ_PEERS"] for name in replicas}
    if len(lists) != 1:
        fail(f"the replicas are given different ASYNCQ_PEERS: {sorted(lists)}")
    peers = environments[replicas[0]]["ASYNCQ_PEERS"].split(",")
    if len(peers) not in (3, 5):
        fail(f"a group of {len(peers)}: 3 or 5 replicas")
    if len(replicas) != len(peers):
        fail(f"{len(peers)} peers but {len(replicas)} replica services: {', '.join(replicas)}")
    volumes, secrets = {}, set()
    for name in replicas:
        env, service = environments[name], services[name]
        port = bind_port(env.get("ASYNCQ_BIND"))
        node = env.get("ASYNCQ_NODE_ID", "")
        place = int(node) if node.isdigit() else 0
        if not 1 <= place <= len(peers):
            fail(f"{name}: ASYNCQ_NODE_ID={node!r} is not a place in ASYNCQ_PEERS")
        elif peers[place - 1] != f"{name}:{port}":
            fail(f"{name}: ASYNCQ_NODE_ID={node} names {peers[place - 1]}, not {name}:{port}")
        if env.get("ASYNCQ_JOIN"):
            fail(f"{name}: ASYNCQ_JOIN in the group's own file (a replica added later gets it in "
                 "a file of its own)")
        if env.get("ASYNCQ_FSYNC") != "always":
            fail(f"{name}: ASYNCQ_FSYNC={env.get('ASYNCQ_FSYNC')!r}, not always")
        data_dir = env.get("ASYNCQ_DATA_DIR")
        mounts = [v for v in service.get("volumes") or []
                  if (v.get("target") if isinstance(v, dict) else str(v).split(":")[1]) == data_dir]
        if not data_dir or len(mounts) != 1:
            fail(f"{name}: no volume at ASYNCQ_DATA_DIR={data_dir!r}")
        else:
            mount = mounts[0]
            source = mount.get("source") if isinstance(mount, dict) else str(mount).split(":")[0]
            read_only = (mount.get("read_only") if isinstance(mount, dict)
                         else str(mount).endswith(":ro"))
            if read_only:
                fail(f"{name}: its data volume {source} is read-only")
            if source in volumes:
                fail(f"{name}: its data volume {source} is {volumes[source]}'s too")
            volumes[source] = name
        secrets.add(env.get("ASYNCQ_CURVE_SECRET", ""))
        published = [(host, at) for host, at, target in published_targets(service)
                     if target == port + 2]
        for host, at in published:
            where = f"{host}:{at}" if at else "a port of the host's choosing"
            fail(f"{name}: the replication port {port + 2} is published (on {where}): "
                 "its traffic is unauthenticated")
        print(f"replicas: {name} is replica {node} of {','.join(peers)}, its data on "
              f"{mounts[0] if mounts else '?'}, port {port + 2} "
              f"{'PUBLISHED' if published else 'not published'}")
    if len(secrets) != 1 or "" in secrets:
        fail(f"the replicas must share one broker key (ASYNCQ_CURVE_SECRET): {sorted(secrets)}")
    for name, env in sorted(environments.items()):
        if name in replicas or "ASYNCQ_BROKER" not in env:
            continue
        given = env["ASYNCQ_BROKER"].split(",")
        if sorted(given) != sorted(peers):
            fail(f"{name}: ASYNCQ_BROKER={env['ASYNCQ_BROKER']} is not every replica")
        depends = services[name].get("depends_on") or {}
        missing = [r for r in replicas if r not in depends]
        if missing:
            fail(f"{name}: does not wait for {', '.join(missing)}")
        else:
            print(f"replicas: {name} is given every replica and waits for each")
    return ok


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    compose_files, bin_dir, schemas = sys.argv[1].split("+"), sys.argv[2], sys.argv[3:]
    ok = all([validate(name, schema) for name in compose_files for schema in schemas])
    ok = check_environment(compose_files, bin_dir) and ok
    ok = check_replicas(compose_files) and ok
    print("compose file: OK" if ok else "compose file: FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
