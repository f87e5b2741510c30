#!/usr/bin/env python3
"""Local stand-ins for everything ecs-patchd talks to on an EC2 host, in one process.

- moto's server (ECS, EC2) on 127.0.0.1, wrapped to count ECS calls by operation;
- an IMDSv2 stand-in that enforces tokens (PUT first, 401 without a valid token);
- the ECS agent's introspection API (`/v1/metadata`, `/v1/tasks`), which can be stopped and
  started, and can come back registered in another cluster;
- a scheduler thread that plays the ECS service scheduler: tasks started by a service
  (`startedBy = ecs-svc/...`) are stopped on a DRAINING instance and started again on an
  ACTIVE peer; standalone tasks are left alone, as ECS does;
- real ECS's task shutdown: a stopped task's desired status is STOPPED at once (so the
  instance's counts drop), but it lingers in DEACTIVATING, then STOPPING, for
  --deactivating-seconds before it is STOPPED (moto stops it at once); the agent sees its
  containers stop a quarter of that before ECS reports STOPPED (ECS learns it from the agent);
- an agent that takes --agent-start-seconds to come up (and reconnect) after a start or a
  restart, and is down meanwhile;
- a scheduler that places a replacement only on an ACTIVE, connected peer with room
  (--peer-capacity limits the peers), and counts the tasks it could not place;
- hosts spread over --zones availability zones;
- the peaks of hosts out of service, zones out and lease holders, counted on every change;
- DeleteAttributes by name and target, as the API documents it (moto needs the value);
- IMDS spot interruption notices and Auto Scaling target lifecycle states, and an IMDS that
  refuses tokens or fails its answers, set through the control API; an Auto Scaling group
  holding the hosts (--asg);
- error injection: chosen ECS operations answer a chosen error code a given number of times;
- a control API under `/_standin/` on the moto port, used by the test scripts;
- with --hosts N, N such hosts (each with its own IMDS and agent); with --lease-table, the
  DynamoDB table ecs-patchd keeps slots in; with --fleetlock-slots, a FleetLock server
  answering as airlock does (500 `failed_lock` when the semaphore is full).

When everything is up, the addresses and ids are written as JSON to --state-file.
"""

import argparse
import logging
import json
import os
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REGION = "us-east-1"
AZ = "us-east-1a"
ACCOUNT = "123456789012"
ECS_TARGET = "AmazonEC2ContainerServiceV20141113."
SSM_TARGET = "AmazonSSM."


class World:
    """The simulated host: its instance, agent and ECS records."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.RLock()
        self.calls = {}
        self.hosts = []  # each: instance_id, arn, agent_up, agent_version, lose_agent_state
        self.cluster = args.cluster
        self.fleetlock = {"holders": [], "calls": []}
        self.lingering = {}  # task arn -> time it reaches STOPPED
        self.service_deficit = {}  # service name -> tasks it runs short of what it counts
        self.stopped_at = {}  # task arn -> time it reached STOPPED
        self.inject = {}  # ECS operation -> {"code", "status", "times"}
        self.ssm = []  # PutComplianceItems and PutInventory requests, in order: {"operation", "body"}
        self.webhooks = []  # what was posted to the webhook stand-in
        self.peaks = {"out": 0, "zones_out": 0, "holders": 0}
        self.unplaceable = 0

    def host(self, index):
        return self.hosts[int(index or 0)]

    # ---- moto backend access ---------------------------------------------------------
    def ecs(self):
        from moto.ecs.models import ecs_backends
        return ecs_backends[ACCOUNT][REGION]

    def records(self, h):
        """Container instances registered from host h's EC2 instance."""
        return [ci for ci in self.ecs().container_instances.get(self.cluster, {}).values()
                if ci.ec2_instance_id == h["instance_id"]]

    def count(self, name):
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1

    # ---- control operations ------------------------------------------------------------
    def track(self):
        """Updates the peaks from the world as it is now (called on every change)."""
        instances = self.ecs().container_instances.get(self.cluster, {}).values()
        ours = {h["instance_id"]: h for h in self.hosts}
        out = [ci for ci in instances if ci.ec2_instance_id in ours
               and (ci.status != "ACTIVE" or not ci.agent_connected)]
        zones = {ci.attributes.get("ecs.availability-zone") for ci in out}
        self.peaks["out"] = max(self.peaks["out"], len(out))
        self.peaks["zones_out"] = max(self.peaks["zones_out"], len(zones))
        if self.args.lease_table:
            holders = max((len(g["holders"]) for g in self.lease_groups().values()), default=0)
            self.peaks["holders"] = max(self.peaks["holders"], holders)

    def agent_stop(self, h):
        with self.lock:
            h["agent_up"] = False
            for ci in self.records(h):
                ci.agent_connected = False
            self.track()

    def agent_start(self, h, version=None, restart=False):
        """`systemctl start|restart ecs`: returns at once; the agent is down (a restart takes
        it down) and comes up, connected, --agent-start-seconds later."""
        with self.lock:
            if h["agent_up"] and not restart:
                return  # already running: `systemctl start` changes nothing
        self.agent_stop(h)
        with self.lock:
            h["agent_starting"] = True
        timer = threading.Timer(self.args.agent_start_seconds, self.agent_ready, (h, version))
        timer.daemon = True
        timer.start()

    def agent_ready(self, h, version):
        with self.lock:
            h["agent_starting"] = False
            if version:
                h["agent_version"] = version
            if h["lose_agent_state"]:
                # The agent's saved state is gone: it registers a new container instance.
                fresh = self.ecs().register_container_instance(self.cluster, h["instance_id"])
                h["arn"] = fresh.container_instance_arn
                h["lose_agent_state"] = False
            for ci in self.records(h):
                ci.agent_connected = ci.container_instance_arn == h["arn"]
            if h.get("agent_lie_next_start"):
                h["agent_lie"] = h.pop("agent_lie_next_start")
            h["agent_up"] = True
            self.track()

    def reboot(self, h, lose_agent_state):
        with self.lock:
            h["lose_agent_state"] = bool(lose_agent_state)
        self.agent_stop(h)

    def settle_stopping_tasks(self):
        """Moves lingering tasks on: DEACTIVATING, then STOPPING, then STOPPED."""
        now = time.time()
        backend = self.ecs()
        for task in backend.tasks.get(self.cluster, {}).values():
            until = self.lingering.get(task.task_arn)
            if until is None:
                continue
            if now >= until:
                task.last_status = "STOPPED"
                self.stopped_at[task.task_arn] = now
                del self.lingering[task.task_arn]
            elif now >= until - self.args.deactivating_seconds / 2:
                task.last_status = "STOPPING"

    def agent_tasks(self, h):
        backend = self.ecs()
        now = time.time()

        def known(t):
            # The agent sees the containers stop first; ECS reports STOPPED a moment later.
            until = self.lingering.get(t.task_arn)
            stopped = t.last_status == "STOPPED" or (
                until is not None and now >= until - self.args.deactivating_seconds / 4)
            return "STOPPED" if stopped else "RUNNING"

        return [{"Arn": t.task_arn, "DesiredStatus": t.desired_status, "KnownStatus": known(t),
                 "Family": "web", "Version": "1", "Containers": []}
                for t in backend.tasks.get(self.cluster, {}).values()
                if t.container_instance_arn == h["arn"]]

    def drain_by_other(self, h):
        with self.lock:
            self.ecs().update_container_instances_state(self.cluster, [h["arn"]], "DRAINING")

    def describe(self):
        backend = self.ecs()
        out = []
        for ci in backend.container_instances.get(self.cluster, {}).values():
            out.append({
                "arn": ci.container_instance_arn,
                "ec2_instance_id": ci.ec2_instance_id,
                "status": ci.status,
                "agent_connected": ci.agent_connected,
                "running_tasks": sum(1 for t in backend.tasks.get(self.cluster, {}).values()
                                     if t.container_instance_arn == ci.container_instance_arn
                                     and t.desired_status == "RUNNING"),
                "attributes": {k: v for k, v in ci.attributes.items() if not k.startswith("ecs.")},
            })
        first = self.hosts[0]
        tasks = [{"arn": t.task_arn, "container_instance_arn": t.container_instance_arn,
                  "last_status": t.last_status, "desired_status": t.desired_status,
                  "stopped_at": self.stopped_at.get(t.task_arn)}
                 for t in backend.tasks.get(self.cluster, {}).values()]
        return {"instances": out, "tasks": tasks, "calls": dict(self.calls), "current_arn": first["arn"],
                "peaks": dict(self.peaks), "unplaceable": self.unplaceable,
                "injections_left": {op: i["times"] for op, i in self.inject.items()},
                "agent_version": first["agent_version"], "agent_up": first["agent_up"],
                "hosts": [{k: h[k] for k in ("instance_id", "arn", "agent_version", "agent_up")} for h in self.hosts]}

    def autoscaling(self):
        from moto.autoscaling.models import autoscaling_backends
        backend = autoscaling_backends[ACCOUNT][REGION]
        return {i.instance.id: {"group": g.name, "protected": bool(i.protected_from_scale_in)}
                for g in backend.autoscaling_groups.values() for i in g.instance_states}

    def lease_items(self):
        from moto.dynamodb.models import dynamodb_backends
        table = dynamodb_backends[ACCOUNT][REGION].get_table(self.args.lease_table)
        items = {}
        for item in table.all_items():
            doc = item.to_json()["Attributes"]
            body = doc.get("body", {}).get("S", "")
            # A counter (the ticket counter) has an empty body: its value is the version.
            items[doc["id"]["S"]] = json.loads(body) if body else {"counter": int(doc["version"]["N"])}
        return items

    def lease_groups(self):
        """Each group's slots as one view: its pause, its holders and the hosts queued."""
        items = self.lease_items()
        groups = {}
        for key, control in items.items():
            if control.get("format") != 2:
                continue
            slots = [items.get(f"{key}/slot/{n}", {}) for n in range(control.get("slots", 0))]
            taken = items.get(f"{key}/tickets", {}).get("counter", 0)
            queue = [items[f"{key}/ticket/{t}"] for t in range(control.get("served", 0) + 1, taken + 1)
                     if f"{key}/ticket/{t}" in items]
            groups[key] = {"control": control, "paused": control.get("paused"),
                           "holders": [s["holder"] for s in slots if s.get("holder")], "queue": queue}
        return groups

    # ---- the ECS service scheduler -----------------------------------------------------
    def schedule_forever(self):
        while True:
            time.sleep(self.args.scheduler_period)
            try:
                with self.lock:
                    self.settle_stopping_tasks()
                    self.reschedule()
            except Exception as e:  # keep playing the scheduler whatever one round did
                print(f"scheduler: {e!r}", flush=True)

    def reschedule(self):
        backend = self.ecs()
        instances = backend.container_instances.get(self.cluster, {})
        active = [ci for ci in instances.values() if ci.status == "ACTIVE" and ci.agent_connected]

        tasks = backend.tasks.get(self.cluster, {}).values()

        def room(ci, task):
            # AWS (task placement): "Identify the container instances that satisfy the CPU,
            # GPU, memory, and port requirements in the task definition", then the placement
            # constraints (a distinctInstance service: by the tasks' desired status).
            need = task.resource_requirements
            free = {r["name"]: r.get("integerValue", 0) for r in ci.remaining_resources}
            taken = {r["name"]: set(r.get("stringSetValue") or []) for r in ci.remaining_resources}
            if free.get("CPU", 0) < need.get("CPU", 0) or free.get("MEMORY", 0) < need.get("MEMORY", 0):
                return False
            for kind in ("PORTS", "PORTS_UDP"):
                if taken.get(kind, set()) & {str(p) for p in need.get(kind, [])}:
                    return False
            if need.get("GPU", 0) > len(taken.get("GPU", set())):
                return False
            service = (task.group or "").removeprefix("service:")
            if service in world_distinct(backend):
                return not any(t.group == task.group and t.desired_status == "RUNNING"
                               and t.container_instance_arn == ci.container_instance_arn for t in tasks)
            return True

        for task in list(backend.tasks.get(self.cluster, {}).values()):
            if task.desired_status != "RUNNING" or not (task.started_by or "").startswith("ecs-svc/"):
                continue
            home = instances.get((task.container_instance_arn or "").split("/")[-1])
            if home is None or home.status != "DRAINING":
                continue
            target = next((ci for ci in active if ci is not home and room(ci, task)), None)
            if target is None:
                # Nowhere to place it: the service cannot start a replacement, and (with
                # minimumHealthyPercent) keeps the task running. Count it once.
                if not getattr(task, "unplaceable_counted", False):
                    task.unplaceable_counted = True
                    self.unplaceable += 1
                continue
            backend.stop_task(self.cluster, task.task_arn, "Task stopped by the scheduler: instance DRAINING")
            backend.start_task(self.cluster, task.task_definition_arn, [target.container_instance_arn],
                               overrides={}, started_by=task.started_by, group=task.group)


def world_distinct(backend):
    """The services with a distinctInstance placement constraint."""
    return {s.name for s in backend.services.values()
            if any(c.get("type") == "distinctInstance" for c in (s.placement_constraints or []))}


def patch_moto(world):
    """Makes moto's ECS behave as the AWS documentation says where the daemon depends on it."""
    from moto.ecs.models import EC2ContainerServiceBackend

    stop_task = EC2ContainerServiceBackend.stop_task

    def lingering_stop_task(backend, cluster_str, task_str, reason):
        # AWS: DEACTIVATING is where "the target group deregistration occurs"; STOPPING is
        # where "Amazon ECS is waiting on the container agent" (task lifecycle). The desired
        # status, which runningTasksCount and ListTasks follow, is STOPPED at once.
        task = stop_task(backend, cluster_str, task_str, reason)
        if world.args.deactivating_seconds > 0:
            task.last_status = "DEACTIVATING"
            world.lingering[task.task_arn] = time.time() + world.args.deactivating_seconds
        else:
            world.stopped_at[task.task_arn] = time.time()
        return task

    delete_attribute = EC2ContainerServiceBackend._delete_attribute

    def delete_attribute_by_name(backend, cluster_name, name, value=None, target_id=None, target_type=None):
        # AWS: "For custom attributes, specify the attribute name and target ID, but don't
        # specify the value." moto deletes only when the value matches.
        if value is None and target_id:
            instance = backend.container_instances[cluster_name].get(target_id.rsplit("/", 1)[-1])
            if instance is not None:
                value = instance.attributes.get(name)
        return delete_attribute(backend, cluster_name, name, value, target_id, target_type)

    describe_services = EC2ContainerServiceBackend.describe_services

    def counted_describe_services(backend, cluster_str, names):
        # AWS: "runningCount: The number of tasks in the cluster that are in the RUNNING
        # state"; moto keeps what the service was created with. The CLI's services-stable
        # waiter reads it against desiredCount and the deployments.
        services, failures = describe_services(backend, cluster_str, names)
        tasks = list(backend.tasks.get(cluster_str.split("/")[-1], {}).values())
        for service in services:
            running = sum(1 for t in tasks if t.group == f"service:{service.name}"
                          and t.desired_status == "RUNNING" and t.last_status == "RUNNING")
            running = max(0, running - world.service_deficit.get(service.name, 0))
            service.running_count = running
            service.pending_count = max(0, service.desired_count - running)
            for deployment in service.deployments:
                deployment.update(runningCount=running, desiredCount=service.desired_count)
        return services, failures

    def task_requirements(task_definition):
        # AWS (PortMapping): a hostPort omitted or 0 "automatically receives a port in the
        # ephemeral port range" (nothing reserved); in host mode "host ports must either be
        # undefined or match the container port"; awsvpc ports are on the task's own network
        # interface. UDP mappings are reserved as PORTS_UDP. moto reserves every hostPort,
        # 0 included, in any mode, all as TCP, and knows no GPUs.
        mode = task_definition.network_mode or "bridge"
        needs = {"CPU": 0, "MEMORY": 0, "PORTS": [], "PORTS_UDP": [], "GPU": 0}
        for c in task_definition.container_definitions:
            needs["CPU"] += c.get("cpu", 0)
            needs["MEMORY"] += c.get("memory", c.get("memoryReservation", 0))
            for m in c.get("portMappings", []):
                port = m.get("hostPort") or (m.get("containerPort") if mode == "host" else 0)
                if port and mode in ("bridge", "host"):
                    needs["PORTS_UDP" if m.get("protocol") == "udp" else "PORTS"].append(port)
            for r in c.get("resourceRequirements", []):
                if r.get("type") == "GPU":
                    needs["GPU"] += int(r["value"])
        return needs

    def update_resources(backend, container_instance, needs, removing=False):
        sign = -1 if removing else 1
        for r in container_instance.remaining_resources:
            if r["name"] in ("CPU", "MEMORY"):
                r["integerValue"] -= needs.get(r["name"], 0) * sign
            elif r["name"] in ("PORTS", "PORTS_UDP"):
                for port in map(str, needs.get(r["name"], [])):
                    if removing and port in r["stringSetValue"]:
                        r["stringSetValue"].remove(port)
                    elif not removing:
                        r["stringSetValue"].append(port)
            elif r["name"] == "GPU" and needs.get("GPU", 0):
                # The agent assigns GPU ids to a task's containers and frees them when it stops.
                free = r["stringSetValue"]
                if removing:
                    registered = next(g for g in container_instance.registered_resources if g["name"] == "GPU")
                    free.extend([g for g in registered["stringSetValue"] if g not in free][:needs["GPU"]])
                else:
                    del free[:needs["GPU"]]
        container_instance.running_tasks_count += sign

    list_tasks = EC2ContainerServiceBackend.list_tasks

    def list_tasks_of_service(backend, cluster_str=None, container_instance=None, family=None,
                              started_by=None, service_name=None, desiredStatus=None):
        # AWS (ListTasks): "Specifying a serviceName limits the results to tasks that belong to
        # that service." moto ignores it ("TODO").
        tasks = list_tasks(backend, cluster_str, container_instance, family, started_by, None, desiredStatus)
        if service_name:
            tasks = [t for t in tasks if t.group == f"service:{service_name.split('/')[-1]}"]
        return tasks

    EC2ContainerServiceBackend._calculate_task_resource_requirements = staticmethod(task_requirements)
    EC2ContainerServiceBackend.update_container_instance_resources = update_resources
    EC2ContainerServiceBackend.list_tasks = list_tasks_of_service
    EC2ContainerServiceBackend.describe_services = counted_describe_services
    EC2ContainerServiceBackend.stop_task = lingering_stop_task
    EC2ContainerServiceBackend._delete_attribute = delete_attribute_by_name


def moto_app(world):
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    inner = DomainDispatcherApplication(create_backend_app)

    def control(environ, start_response):
        # One change or look at a time: the scheduler thread and moto's handlers change the
        # same dictionaries under this lock (a read without it can see one change size).
        with world.lock:
            return locked_control(environ, start_response)

    def locked_control(environ, start_response):
        path = environ["PATH_INFO"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
        host = world.host(body.get("host", 0))
        if path == "/_standin/state":
            result = world.describe()
        elif path == "/_standin/lease":
            result = {**world.lease_items(), **world.lease_groups()}
        elif path == "/_standin/fleetlock":
            result = world.fleetlock
        elif path == "/_standin/fleetlock/hold":
            world.fleetlock["holders"].append(body["id"]); result = {}
        elif path == "/_standin/agent/stop":
            world.agent_stop(host); result = {}
        elif path == "/_standin/terminate":
            # The EC2 instance is terminated under its disconnected agent: ECS keeps the record
            # ("instances with disconnected agents aren't automatically deregistered when
            # terminated"), as it was. DescribeInstances: "Recently terminated instances might
            # appear in the returned results. This interval is usually less than one hour":
            # moto keeps them for good; {"purged": true} drops the instance, as EC2 does after
            # that interval (a filter on its id then answers nothing).
            from moto.ec2.models import ec2_backends
            world.agent_stop(host)
            ec2 = ec2_backends[ACCOUNT][REGION]
            ec2.terminate_instances([host["instance_id"]])
            if body.get("purged"):
                for reservation_id, reservation in list(ec2.reservations.items()):
                    reservation.instances = [i for i in reservation.instances if i.id != host["instance_id"]]
                    if not reservation.instances:
                        del ec2.reservations[reservation_id]
            result = {}
        elif path == "/_standin/agent/start":
            world.agent_start(host, body.get("version"), body.get("restart", False)); result = {}
        elif path == "/_standin/reboot":
            world.reboot(host, body.get("lose_agent_state")); result = {}
        elif path == "/_standin/lease/put":
            # {"key": ..., "body": ...}: writes a raw item (an old-format record, say)
            from moto.dynamodb.models import dynamodb_backends
            dynamodb_backends[ACCOUNT][REGION].put_item(world.args.lease_table, {
                "id": {"S": body["key"]}, "version": {"N": "1"}, "body": {"S": body["body"]}})
            result = {}
        elif path == "/_standin/alarm":
            # {"name": ..., "state": "ALARM" | "OK"}: a CloudWatch alarm, created on first use
            from moto.cloudwatch.models import cloudwatch_backends
            cloudwatch = cloudwatch_backends[ACCOUNT][REGION]
            if body["name"] not in cloudwatch.alarms:
                cloudwatch.put_metric_alarm(
                    name=body["name"], namespace="AWS/ApplicationELB", metric_name="HTTPCode_Target_5XX_Count",
                    comparison_operator="GreaterThanThreshold", evaluation_periods=1, period=60, threshold=10.0,
                    statistic="Sum", description="", dimensions=[], alarm_actions=[])
            cloudwatch.set_alarm_state(body["name"], "set by the test", None, body["state"])
            result = {}
        elif path == "/_standin/service-deficit":
            # {"web": 1}: the service reports that many tasks fewer running (slow to recover)
            world.service_deficit.update(body); result = {}
        elif path == "/_standin/drain-by-other":
            world.drain_by_other(host); result = {}
        elif path == "/_standin/imds":
            # {"spot": {...} or null, "lifecycle": "Terminated" or null, "refuse_token": bool,
            #  "fail_get": an HTTP status every GET answers with, or null}
            host["imds"].update({k: body[k] for k in ("spot", "lifecycle", "refuse_token", "fail_get") if k in body})
            result = {}
        elif path == "/_standin/agent/cluster":
            host["agent_cluster"] = body["cluster"]; result = {}
        elif path == "/_standin/agent/lie":
            # What a process that took the agent's port would answer: {"arn": another
            # instance's ARN or null (the truth), "pad": bytes of padding in the answer,
            # "from_next_start": true to begin only when the agent next comes up}
            lie = {"arn": body.get("arn"), "pad": int(body.get("pad", 0))}
            host["agent_lie_next_start" if body.get("from_next_start") else "agent_lie"] = lie; result = {}
        elif path == "/_standin/peer/disconnect":
            with world.lock:
                ids = {h["instance_id"] for h in world.hosts}
                peers = [ci for ci in world.ecs().container_instances[world.cluster].values()
                         if ci.ec2_instance_id not in ids]
                peers[int(body.get("peer", 0))].agent_connected = False
            result = {}
        elif path == "/_standin/inject":
            with world.lock:
                world.inject[body["operation"]] = {"code": body["code"], "status": body.get("status", 400),
                                                   "times": body.get("times", 1)}
            result = {}
        elif path == "/_standin/autoscaling":
            result = world.autoscaling()
        elif path == "/_standin/ssm":
            result = world.ssm
        elif path == "/_standin/webhooks":
            result = world.webhooks
        else:
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"error": "unknown control path"}']
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(result).encode()]

    def app(environ, start_response):
        if environ["PATH_INFO"].startswith("/_standin/"):
            return control(environ, start_response)
        if environ.get("HTTP_SMITHY_PROTOCOL") == "rpc-v2-cbor":
            return cbor_bridge(world, environ, start_response)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith(ECS_TARGET):
            operation = target[len(ECS_TARGET):]
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length)
            import io
            environ["wsgi.input"] = io.BytesIO(raw)
            body = json.loads(raw or b"{}")
            if operation == "UpdateContainerInstancesState":
                operation += ":" + body.get("status", "?")
            if operation == "DeregisterContainerInstance" and body.get("force"):
                world.count("DeregisterContainerInstance:force")
            if operation == "DeleteAttributes" and any("value" in a for a in body.get("attributes", [])):
                world.count("DeleteAttributes:with-value")
            world.count(operation)
            with world.lock:
                injected = world.inject.get(operation)
                if injected and injected["times"] > 0:
                    injected["times"] -= 1
                    error = json.dumps({"__type": injected["code"], "message": "injected by the stand-in"}).encode()
                    start_response(f"{injected['status']} Error", [("Content-Type", "application/x-amz-json-1.1"),
                                                                  ("x-amzn-ErrorType", injected["code"])])
                    return [error]
                response = inner(environ, start_response)
                if operation.startswith("UpdateContainerInstancesState"):
                    world.track()
                return response
        if target in (SSM_TARGET + "PutComplianceItems", SSM_TARGET + "PutInventory"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            return ssm_recorder(world, target[len(SSM_TARGET):], json.loads(environ["wsgi.input"].read(length)),
                                start_response)
        if target.split(".")[-1] in ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems"):
            with world.lock:
                response = inner(environ, start_response)
                world.track()
                return response
        if "autoscaling" in environ.get("HTTP_AUTHORIZATION", ""):
            import io
            import urllib.parse
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(raw)
            form = urllib.parse.parse_qs(raw.decode())
            action = form.get("Action", ["?"])[0]
            if action == "SetInstanceProtection":
                action += ":" + form.get("ProtectedFromScaleIn", ["?"])[0]
            world.count(action)
        return inner(environ, start_response)

    return app


def cbor_bridge(world, environ, start_response):
    """The CloudWatch SDK speaks Smithy RPC v2 CBOR, which moto does not: DescribeAlarms is
    answered here from moto's CloudWatch backend, filtering by names and state together as
    AWS does (moto ignores StateValue when AlarmNames is given)."""
    import cbor2
    from moto.cloudwatch.models import cloudwatch_backends
    operation = environ["PATH_INFO"].rsplit("/", 1)[-1]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    request = cbor2.loads(environ["wsgi.input"].read(length)) if length else {}
    headers = [("Content-Type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor")]
    world.count(operation)
    if operation != "DescribeAlarms":
        start_response("400 Bad Request", headers)
        return [cbor2.dumps({"__type": "UnknownOperationException", "message": f"{operation}: not in the stand-in"})]
    names, state = request.get("AlarmNames"), request.get("StateValue")
    with world.lock:
        found = [a for a in cloudwatch_backends[ACCOUNT][REGION].alarms.values()
                 if (not names or a.name in names) and (not state or a.state_value == state)]
    shown = lambda a: {"AlarmName": a.name, "StateValue": a.state_value}
    body = {"MetricAlarms": [shown(a) for a in found if a.rule is None],
            "CompositeAlarms": [shown(a) for a in found if a.rule is not None]}
    start_response("200 OK", headers)
    return [cbor2.dumps(body)]


def ssm_recorder(world, operation, body, start_response):
    """moto has neither PutComplianceItems nor PutInventory: record them, after the checks
    AWS makes (API reference: ComplianceType `Custom:[a-zA-Z0-9_\\-]\\w+`, ResourceType
    ManagedInstance, ExecutionSummary.ExecutionTime required, Severity and Status from fixed
    sets, at most 10,000 items; TypeName `^(AWS|Custom):.*$`, SchemaVersion `^([0-9]{1,6})(\\.[0-9]{1,6})$`,
    CaptureTime `yyyy-MM-dd'T'HH:mm:ss'Z'`, 1 to 30 items, at most 50 attributes of 4,096 characters)."""
    import re

    def invalid(why):
        start_response("400 Bad Request", [("Content-Type", "application/x-amz-json-1.1"),
                                           ("x-amzn-ErrorType", "ValidationException")])
        return [json.dumps({"__type": "ValidationException", "message": why}).encode()]

    if operation == "PutComplianceItems":
        if not re.fullmatch(r"Custom:[a-zA-Z0-9_\-]\w+", body.get("ComplianceType", "")):
            return invalid("ComplianceType")
        if body.get("ResourceType") != "ManagedInstance" or not body.get("ResourceId"):
            return invalid("ResourceType/ResourceId")
        if "ExecutionTime" not in body.get("ExecutionSummary", {}):
            return invalid("ExecutionSummary.ExecutionTime")
        if "UploadType" in body and body["ComplianceType"] != "Association":
            return invalid("UploadType is only valid for association compliance")
        items = body.get("Items", [])
        if len(items) > 10000:
            return invalid("Items")
        for item in items:
            if item.get("Severity") not in ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNSPECIFIED"):
                return invalid("Severity")
            if item.get("Status") not in ("COMPLIANT", "NON_COMPLIANT"):
                return invalid("Status")
    else:
        items = body.get("Items", [])
        if not body.get("InstanceId") or not 1 <= len(items) <= 30:
            return invalid("InstanceId/Items")
        for item in items:
            if not re.fullmatch(r"(AWS|Custom):.+", item.get("TypeName", "")):
                return invalid("TypeName")
            if not re.fullmatch(r"[0-9]{1,6}\.[0-9]{1,6}", item.get("SchemaVersion", "")):
                return invalid("SchemaVersion")
            if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", item.get("CaptureTime", "")):
                return invalid("CaptureTime")
            for entry in item.get("Content", []):
                if len(entry) > 50 or any(len(v) > 4096 for v in entry.values()):
                    return invalid("Content")
    with world.lock:
        world.ssm.append({"operation": operation, "body": body})
    start_response("200 OK", [("Content-Type", "application/x-amz-json-1.1")])
    return [b"{}"]


def webhook_handler(world):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            with world.lock:
                world.webhooks.append({"path": self.path, "body": body})
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    return Handler


def imds_handler(world, h):
    tokens = set()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, code, body=b"", headers=()):
            self.send_response(code)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self):
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
            if self.path != "/latest/api/token" or not ttl:
                return self.reply(400)
            if world.args.imds_refuse_token or h["imds"].get("refuse_token"):
                return self.reply(403, b"Forbidden")
            token = uuid.uuid4().hex
            tokens.add(token)
            self.reply(200, token.encode(), [("X-aws-ec2-metadata-token-ttl-seconds", ttl)])

        def do_GET(self):
            if self.headers.get("X-aws-ec2-metadata-token") not in tokens:
                return self.reply(401)
            # An IMDS that fails its answers (a status of the test's choosing), with a body
            # and headers a client must not dump into its messages.
            if h["imds"].get("fail_get"):
                return self.reply(h["imds"]["fail_get"], b"<html>internal failure</html>",
                                  [("Content-Type", "text/html"), ("X-Standin-Trace", "0123456789abcdef")])
            doc = {"instanceId": h["instance_id"], "region": REGION, "availabilityZone": h["zone"],
                   "accountId": ACCOUNT, "instanceType": "m5.large", "architecture": "x86_64",
                   "imageId": "ami-0standin", "privateIp": "10.0.0.10"}
            paths = {
                "/latest/dynamic/instance-identity/document": json.dumps(doc),
                "/latest/meta-data/instance-id": h["instance_id"],
                "/latest/meta-data/placement/region": REGION,
                "/latest/meta-data/placement/availability-zone": h["zone"],
            }
            # Absent (404) until set, as on EC2: a spot notice only once one is posted, a
            # target lifecycle state only for an instance in an Auto Scaling group.
            if h["imds"].get("spot"):
                paths["/latest/meta-data/spot/instance-action"] = json.dumps(h["imds"]["spot"])
            if h["imds"].get("lifecycle"):
                paths["/latest/meta-data/autoscaling/target-lifecycle-state"] = h["imds"]["lifecycle"]
            if self.path not in paths:
                return self.reply(404)
            self.reply(200, paths[self.path].encode())

    return Handler


def agent_handler(world, h):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if not h["agent_up"]:
                # A stopped agent does not answer at all.
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if self.path == "/v1/tasks":
                with world.lock:
                    body = json.dumps({"Tasks": world.agent_tasks(h)}).encode()
            elif self.path == "/v1/metadata":
                lie = h.get("agent_lie") or {}
                body = json.dumps({"Cluster": h["agent_cluster"] or world.cluster,
                                   "ContainerInstanceArn": lie.get("arn") or h["arn"],
                                   "Version": h["agent_version"], "Padding": "x" * lie.get("pad", 0)}).encode()
            else:
                self.send_response(404); self.end_headers(); return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def fleetlock_handler(world):
    """The FleetLock protocol as airlock answers it."""
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("fleet-lock-protocol") != "true":
                return self.reply(400, {"kind": "missing_header", "value": "fleet-lock-protocol header missing"})
            try:
                params = json.loads(raw)["client_params"]
                node, group = params["id"], params["group"]
            except (ValueError, KeyError):
                return self.reply(400, {"kind": "bad_request", "value": "client_params with id and group required"})
            state = world.fleetlock
            with world.lock:
                state["calls"].append({"path": self.path, "id": node, "group": group})
                if self.path == "/v1/pre-reboot":
                    if node in state["holders"]:
                        return self.reply(200, {})
                    if len(state["holders"]) >= world.args.fleetlock_slots:
                        return self.reply(500, {"kind": "failed_lock", "value": "semaphore is full"})
                    state["holders"].append(node)
                    return self.reply(200, {})
                if self.path == "/v1/steady-state":
                    if node in state["holders"]:
                        state["holders"].remove(node)
                    return self.reply(200, {})
            return self.reply(404, {"kind": "not_found", "value": self.path})

    return Handler


def serve(handler):
    """Serves `handler` on a port the kernel picks (binding port 0 cannot race another test) and
    returns its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def setup(world, moto_url, args):
    import boto3

    session = boto3.session.Session(aws_access_key_id="standin", aws_secret_access_key="standin",
                                    region_name=REGION)
    ec2 = session.client("ec2", endpoint_url=moto_url)
    ecs = session.client("ecs", endpoint_url=moto_url)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    ecs.create_cluster(clusterName=args.cluster)
    for family, extra in {
        "web": {},
        # Bridge mode with a static host port (or a dynamic one with --host-port 0).
        "edge": {"portMappings": [{"containerPort": 80, "hostPort": args.host_port, "protocol": "tcp"}]},
        "train": {"resourceRequirements": [{"type": "GPU", "value": "1"}]},
        "db": {},
    }.items():
        ecs.register_task_definition(family=family, networkMode="bridge", containerDefinitions=[
            {"name": family, "image": "nginx", "cpu": 128, "memory": 128, "essential": True, **extra}])

    def host(zone=AZ, gpus=0):
        instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="m5.large",
                                     Placement={"AvailabilityZone": zone})["Instances"][0]["InstanceId"]
        doc = json.dumps({"instanceId": instance})
        arn = ecs.register_container_instance(cluster=args.cluster, instanceIdentityDocument=doc)[
            "containerInstance"]["containerInstanceArn"]
        if gpus:
            # The agent registers an instance's GPUs (platformDevices); ECS shows them as a
            # GPU resource of their ids, which moto does not know.
            from moto.ecs.models import ecs_backends
            ci = ecs_backends[ACCOUNT][REGION].container_instances[args.cluster][arn.split("/")[-1]]
            ids = [f"GPU-{arn.split('/')[-1][:8]}-{n}" for n in range(gpus)]
            for resources in (ci.registered_resources, ci.remaining_resources):
                resources.append({"name": "GPU", "type": "STRINGSET", "stringSetValue": list(ids),
                                  "integerValue": 0, "longValue": 0, "doubleValue": 0.0})
        return instance, arn

    zones = [f"{REGION}{letter}" for letter in "abcdef"[:max(1, args.zones)]]
    for index in range(args.hosts):
        zone = zones[index % len(zones)]
        instance, arn = host(zone, args.gpus)
        world.hosts.append({"instance_id": instance, "arn": arn, "agent_up": True, "agent_starting": False,
                            "agent_version": args.agent_version, "lose_agent_state": False,
                            "imds": {}, "agent_cluster": None, "zone": zone})
    from moto.ecs.models import ecs_backends
    peers = []
    for index in range(args.peers):
        _, peer_arn = host(zones[index % len(zones)], args.gpus if index < args.gpu_peers else 0)
        peers.append(peer_arn)
        if args.peer_capacity is not None:
            peer = ecs_backends[ACCOUNT][REGION].container_instances[args.cluster][peer_arn.split("/")[-1]]
            for resources in (peer.registered_resources, peer.remaining_resources):
                for r in resources:
                    if r["name"] in ("CPU", "MEMORY"):
                        r["integerValue"] = 128 * args.peer_capacity  # room for that many tasks
    services = {"web": {"maximumPercent": 200, "minimumHealthyPercent": 50}}
    if args.stuck_service:
        services["stuck"] = {"maximumPercent": 100, "minimumHealthyPercent": 100}
    # A service of one task on each host and on the first N peers: static host port, GPU, or
    # one task per instance (distinctInstance).
    spread = {"edge": args.port_service, "train": args.gpu_peers if args.gpus else -1, "db": args.distinct_service}
    for name, on_peers in spread.items():
        if on_peers >= 0:
            services[name] = {"maximumPercent": 200, "minimumHealthyPercent": 50}
    for name, deployment in services.items():
        ecs.create_service(cluster=args.cluster, serviceName=name, taskDefinition=name if name in spread else "web",
                           desiredCount=0)
        service = next(s for s in ecs_backends[ACCOUNT][REGION].services.values() if s.name == name)
        service.deployment_configuration = deployment  # moto keeps no deployment configuration
        # moto keeps no placement constraints either.
        service.placement_constraints = [{"type": "distinctInstance"}] if name == "db" else []
    for name, on_peers in spread.items():
        if on_peers >= 0:
            ecs.start_task(cluster=args.cluster, taskDefinition=name,
                           containerInstances=[h["arn"] for h in world.hosts] + peers[:on_peers],
                           startedBy=f"ecs-svc/{name}", group=f"service:{name}")
    for h in world.hosts:
        if args.tasks:
            ecs.start_task(cluster=args.cluster, taskDefinition="web", containerInstances=[h["arn"]] * args.tasks,
                           startedBy="ecs-svc/web", group="service:web")
        if args.stuck_service:
            ecs.start_task(cluster=args.cluster, taskDefinition="web", containerInstances=[h["arn"]],
                           startedBy="ecs-svc/stuck", group="service:stuck")
        if args.standalone_tasks:
            ecs.start_task(cluster=args.cluster, taskDefinition="web",
                           containerInstances=[h["arn"]] * args.standalone_tasks)
    # Each service wants the tasks it was given.
    for service in ecs_backends[ACCOUNT][REGION].services.values():
        service.desired_count = sum(1 for t in ecs_backends[ACCOUNT][REGION].tasks.get(args.cluster, {}).values()
                                    if t.group == f"service:{service.name}")
    if args.asg:
        autoscaling = session.client("autoscaling", endpoint_url=moto_url)
        autoscaling.create_launch_configuration(LaunchConfigurationName=args.asg, ImageId=image,
                                                InstanceType="m5.large")
        autoscaling.create_auto_scaling_group(AutoScalingGroupName=args.asg, LaunchConfigurationName=args.asg,
                                              MinSize=0, MaxSize=10, DesiredCapacity=0,
                                              AvailabilityZones=zones)
        ids = [h["instance_id"] for h in world.hosts]
        autoscaling.attach_instances(AutoScalingGroupName=args.asg, InstanceIds=ids)
        if args.asg_protected:
            autoscaling.set_instance_protection(AutoScalingGroupName=args.asg, InstanceIds=ids,
                                                ProtectedFromScaleIn=True)
        for h in world.hosts:
            h["imds"]["lifecycle"] = "InService"
    if args.lease_table:
        session.client("dynamodb", endpoint_url=moto_url).create_table(
            TableName=args.lease_table, BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    # One lifecycle step per DescribeTasks call is moto's default: keep tasks where they are.
    import urllib.request
    req = urllib.request.Request(
        moto_url + "/moto-api/state-manager/set-transition", method="POST",
        data=json.dumps({"model_name": "ecs::task",
                         "transition": {"progression": "manual", "times": 1000000000}}).encode())
    urllib.request.urlopen(req).read()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-file", required=True, help="where to write the addresses and ids (JSON)")
    parser.add_argument("--cluster", default="demo")
    parser.add_argument("--hosts", type=int, default=1, help="hosts that run ecs-patchd")
    parser.add_argument("--tasks", type=int, default=3, help="service tasks on each host")
    parser.add_argument("--standalone-tasks", type=int, default=0, help="standalone tasks on each host")
    parser.add_argument("--peers", type=int, default=1, help="other hosts in the cluster (they take the tasks)")
    parser.add_argument("--lease-table", default="", help="create this DynamoDB table for the slots")
    parser.add_argument("--fleetlock-slots", type=int, default=0, help="run a FleetLock server with this many slots")
    parser.add_argument("--agent-version", default="1.0.0")
    parser.add_argument("--scheduler-period", type=float, default=0.2)
    parser.add_argument("--imds-refuse-token", action="store_true", help="answer every token request with 403")
    parser.add_argument("--agent-start-seconds", type=float, default=0.5,
                        help="the agent comes up (and reconnects) this long after a start or restart")
    parser.add_argument("--zones", type=int, default=1, help="spread the hosts over this many zones")
    parser.add_argument("--peer-capacity", type=int, default=None,
                        help="the peers have room for this many tasks in all (default: moto's 4096 CPU)")
    parser.add_argument("--deactivating-seconds", type=float, default=1.0,
                        help="a stopped task lingers this long in DEACTIVATING and STOPPING")
    parser.add_argument("--stuck-service", action="store_true",
                        help="also run a task of a service with minimumHealthyPercent 100 and maximumPercent 100")
    parser.add_argument("--port-service", type=int, default=-1, metavar="N",
                        help="a service \"edge\" with a static host port (--host-port), one task on each host "
                             "and on the first N peers")
    parser.add_argument("--host-port", type=int, default=8080, help="the edge service's hostPort (0: dynamic)")
    parser.add_argument("--gpus", type=int, default=0,
                        help="the hosts register this many GPUs and run a task of service \"train\" that needs one")
    parser.add_argument("--gpu-peers", type=int, default=0,
                        help="this many peers register --gpus GPUs and run a train task too (one GPU left free "
                             "with --gpus 2)")
    parser.add_argument("--distinct-service", type=int, default=-1, metavar="N",
                        help="a service \"db\" with a distinctInstance constraint, one task on each host and on "
                             "the first N peers")
    parser.add_argument("--asg", default="", help="put the hosts in an Auto Scaling group of this name")
    parser.add_argument("--asg-protected", action="store_true", help="the hosts start protected from scale-in")
    args = parser.parse_args()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    world = World(args)
    patch_moto(world)
    from werkzeug.serving import make_server
    moto = make_server("127.0.0.1", 0, moto_app(world), threaded=True)
    threading.Thread(target=moto.serve_forever, daemon=True).start()
    moto_url = f"http://127.0.0.1:{moto.socket.getsockname()[1]}"
    setup(world, moto_url, args)
    hosts = []
    for h in world.hosts:
        hosts.append({"imds_url": serve(imds_handler(world, h)), "agent_url": serve(agent_handler(world, h)),
                      "instance_id": h["instance_id"], "container_instance_arn": h["arn"]})
    fleetlock_url = serve(fleetlock_handler(world)) if args.fleetlock_slots else None
    webhook_url = serve(webhook_handler(world)) + "/services/T000/B000/secret-token"
    threading.Thread(target=world.schedule_forever, daemon=True).start()

    state = dict(hosts[0], moto_url=moto_url, cluster=world.cluster, region=REGION, hosts=hosts,
                 lease_table=args.lease_table, fleetlock_url=fleetlock_url, webhook_url=webhook_url)
    temp = args.state_file + ".tmp"
    with open(temp, "w") as f:
        json.dump(state, f)
    os.rename(temp, args.state_file)
    print(f"stand-ins ready: {json.dumps(state)}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
