"""The sandbox driven by the official Python `kubernetes` client: another ecosystem's client
must see a Kubernetes API. Run by tests/python_client.rs (cargo test), which starts the sandbox
with two Ready nodes and writes the kubeconfig."""

import json

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException


def cm(name, data=None, labels=None):
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels=labels), data=data or {"k": "v"}
    )


def status_of(e):
    return json.loads(e.body)


def raw(api_client, method, path):
    """A request to any path: (HTTP status, decoded JSON body). Works with the client's old
    (`call_api(path, method, ...)`) and new (`param_serialize` + `call_api`) generators."""
    if hasattr(api_client, "param_serialize"):
        m, url, headers, body, _ = api_client.param_serialize(
            method, path, auth_settings=["BearerToken"]
        )
        r = api_client.call_api(m, url, header_params=headers, body=body)
        r.read()
        return r.status, json.loads(r.data)
    try:
        r = api_client.call_api(
            path, method, auth_settings=["BearerToken"], _preload_content=False
        )[0]
        return r.status, json.loads(r.data)
    except ApiException as e:
        return e.status, json.loads(e.body)


def test_typed_crud_of_several_kinds(core, apps, api_client, ns):
    created = core.create_namespaced_config_map(ns, cm("settings", {"mode": "fast"}))
    assert created.metadata.uid and created.metadata.resource_version
    got = core.read_namespaced_config_map("settings", ns)
    assert got.data == {"mode": "fast"}
    got.data["mode"] = "slow"
    replaced = core.replace_namespaced_config_map("settings", ns, got)
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    patched = core.patch_namespaced_config_map("settings", ns, {"data": {"extra": "1"}})
    assert patched.data == {"mode": "slow", "extra": "1"}

    secret = core.create_namespaced_secret(
        ns,
        client.V1Secret(metadata=client.V1ObjectMeta(name="creds"), string_data={"pw": "s3cret"}),
    )
    assert secret.metadata.name == "creds"
    sa = core.create_namespaced_service_account(
        ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="robot"))
    )
    assert sa.metadata.name == "robot"
    # No token Secret is made for a ServiceAccount (Kubernetes 1.24+).
    names = [s.metadata.name for s in core.list_namespaced_secret(ns).items]
    assert names == ["creds"]

    svc = core.create_namespaced_service(
        ns,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="front"),
            spec=client.V1ServiceSpec(
                selector={"app": "web"}, ports=[client.V1ServicePort(port=80)]
            ),
        ),
    )
    assert svc.spec.cluster_ip.startswith("10.")
    assert svc.spec.ports[0].target_port == 80

    rbac = client.RbacAuthorizationV1Api(api_client)
    role = rbac.create_namespaced_role(
        ns,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get"])],
        ),
    )
    assert role.rules[0].verbs == ["get"]

    core.delete_namespaced_config_map("settings", ns)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("settings", ns)
    assert e.value.status == 404


def test_a_deployment_and_a_job_are_acted_on(apps, api_client, ns):
    labels = {"app": "web"}
    template = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels=labels),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="web", image="registry.k8s.io/pause:3.10")]
        ),
    )
    apps.create_namespaced_deployment(
        ns,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels=labels),
                template=template,
            ),
        ),
    )
    w = watch.Watch()
    available = False
    for ev in w.stream(
        apps.list_namespaced_deployment,
        ns,
        field_selector="metadata.name=web",
        timeout_seconds=60,
    ):
        if (ev["object"].status.available_replicas or 0) == 2:
            available = True
            w.stop()
    assert available, "the Deployment never had 2 available replicas"

    batch = client.BatchV1Api(api_client)
    batch.create_namespaced_job(
        ns,
        client.V1Job(
            metadata=client.V1ObjectMeta(name="once"),
            spec=client.V1JobSpec(
                template=client.V1PodTemplateSpec(
                    spec=client.V1PodSpec(
                        restart_policy="Never",
                        containers=[
                            client.V1Container(name="c", image="registry.k8s.io/pause:3.10")
                        ],
                    )
                )
            ),
        ),
    )
    complete = False
    for ev in w.stream(
        batch.list_namespaced_job, ns, field_selector="metadata.name=once", timeout_seconds=60
    ):
        conds = ev["object"].status.conditions or []
        if any(c.type == "Complete" and c.status == "True" for c in conds):
            complete = True
            w.stop()
    assert complete, "the Job never completed"


def test_pagination_with_limit_and_continue(core, ns):
    for i in range(5):
        core.create_namespaced_config_map(ns, cm(f"page-{i}", labels={"set": "pages"}))
    seen, token, pages = [], None, 0
    while True:
        page = core.list_namespaced_config_map(
            ns, label_selector="set=pages", limit=2, _continue=token
        )
        pages += 1
        assert len(page.items) <= 2
        seen += [c.metadata.name for c in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert pages == 3
    assert seen == [f"page-{i}" for i in range(5)]


def test_label_and_field_selectors(core, ns):
    core.create_namespaced_config_map(ns, cm("a", labels={"tier": "front"}))
    core.create_namespaced_config_map(ns, cm("b", labels={"tier": "back"}))
    core.create_namespaced_config_map(ns, cm("c"))
    names = lambda r: sorted(o.metadata.name for o in r.items)  # noqa: E731
    assert names(core.list_namespaced_config_map(ns, label_selector="tier=front")) == ["a"]
    assert names(core.list_namespaced_config_map(ns, label_selector="tier")) == ["a", "b"]
    assert names(core.list_namespaced_config_map(ns, label_selector="tier notin (front)")) == [
        "b",
        "c",
    ]
    assert names(core.list_namespaced_config_map(ns, field_selector="metadata.name=b")) == ["b"]
    assert names(core.list_namespaced_config_map(ns, field_selector="metadata.name!=b")) == [
        "a",
        "c",
    ]
    nodes = core.list_node(field_selector="metadata.name=worker-1").items
    assert [n.metadata.name for n in nodes] == ["worker-1"]
    with pytest.raises(ApiException) as e:
        core.list_namespaced_config_map(ns, field_selector="data.k=v")
    assert e.value.status == 400
    assert "field label not supported: data.k" in status_of(e.value)["message"]


def test_watch_from_a_resource_version_and_410_when_expired(core, api_client, ns):
    first = core.create_namespaced_config_map(ns, cm("watched"))
    rv = first.metadata.resource_version
    core.patch_namespaced_config_map("watched", ns, {"data": {"k": "changed"}})
    core.delete_namespaced_config_map("watched", ns)
    w = watch.Watch()
    kinds = []
    for ev in w.stream(
        core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=30
    ):
        kinds.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED":
            w.stop()
    assert kinds == [("MODIFIED", "watched"), ("DELETED", "watched")]

    # The sandbox's fault injection forgets the history: the old resourceVersion is gone.
    code, body = raw(api_client, "POST", "/sandbox/watch-history/expire")
    assert (code, body) == (200, {"expired": True})
    with pytest.raises(ApiException) as e:
        for _ in watch.Watch().stream(
            core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=10
        ):
            pass
    assert e.value.status == 410


def test_server_side_apply_with_a_conflict(core, ns):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owned"}, "data": {"k": "a"}}
    core.patch_namespaced_config_map(
        "owned", ns, body, field_manager="alice", _content_type="application/apply-patch+yaml"
    )
    body["data"]["k"] = "b"
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_config_map(
            "owned", ns, body, field_manager="bob", _content_type="application/apply-patch+yaml"
        )
    assert e.value.status == 409
    st = status_of(e.value)
    assert st["reason"] == "Conflict"
    assert any(c["field"] == ".data.k" for c in st["details"]["causes"]), st
    forced = core.patch_namespaced_config_map(
        "owned",
        ns,
        body,
        field_manager="bob",
        force=True,
        _content_type="application/apply-patch+yaml",
    )
    assert forced.data == {"k": "b"}
    assert [m.manager for m in forced.metadata.managed_fields] == ["bob"]


def test_eviction_is_refused_by_a_pdb(core, apps, api_client, ns):
    labels = {"app": "db"}
    apps.create_namespaced_replica_set(
        ns,
        client.V1ReplicaSet(
            metadata=client.V1ObjectMeta(name="db"),
            spec=client.V1ReplicaSetSpec(
                replicas=1,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[client.V1Container(name="db", image="registry.k8s.io/pause:3.10")]
                    ),
                ),
            ),
        ),
    )
    policy = client.PolicyV1Api(api_client)
    policy.create_namespaced_pod_disruption_budget(
        ns,
        client.V1PodDisruptionBudget(
            metadata=client.V1ObjectMeta(name="db"),
            spec=client.V1PodDisruptionBudgetSpec(
                min_available=1, selector=client.V1LabelSelector(match_labels=labels)
            ),
        ),
    )
    pods = core.list_namespaced_pod(ns, label_selector="app=db").items
    assert len(pods) == 1 and pods[0].status.phase == "Running"
    eviction = client.V1Eviction(
        metadata=client.V1ObjectMeta(name=pods[0].metadata.name, namespace=ns)
    )
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod_eviction(pods[0].metadata.name, ns, eviction)
    assert e.value.status == 429
    assert "disruption budget" in status_of(e.value)["message"]
    policy.delete_namespaced_pod_disruption_budget("db", ns)
    core.create_namespaced_pod_eviction(pods[0].metadata.name, ns, eviction)
    gone = core.read_namespaced_pod(pods[0].metadata.name, ns)
    assert gone.metadata.deletion_timestamp is not None


def test_dry_run_stores_nothing(core, ns):
    out = core.create_namespaced_config_map(ns, cm("ghost"), dry_run="All")
    assert out.metadata.name == "ghost"
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("ghost", ns)
    assert e.value.status == 404
    core.create_namespaced_config_map(ns, cm("real"))
    core.delete_namespaced_config_map("real", ns, dry_run="All")
    assert core.read_namespaced_config_map("real", ns).metadata.name == "real"


def test_error_bodies_of_404_409_and_422(core, ns):
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("missing", ns)
    st = status_of(e.value)
    assert (e.value.status, st["kind"], st["reason"]) == (404, "Status", "NotFound")
    assert st["message"] == 'configmaps "missing" not found'
    assert st["details"] == {"name": "missing", "kind": "configmaps"}

    core.create_namespaced_config_map(ns, cm("twice"))
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(ns, cm("twice"))
    st = status_of(e.value)
    assert (e.value.status, st["reason"]) == (409, "AlreadyExists")
    assert st["message"] == 'configmaps "twice" already exists'

    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(ns, cm("Not_A_Name"))
    st = status_of(e.value)
    assert (e.value.status, st["reason"]) == (422, "Invalid")
    assert st["details"]["causes"][0]["field"] == "metadata.name"
    assert st["message"].startswith('ConfigMap "Not_A_Name" is invalid: metadata.name: Invalid value')


def test_a_bad_path_is_404_and_the_server_stays_up(core, api_client):
    for path in [
        "/api/v1/namespaces/default/nothings",
        "/api/v1/namespaces/default/configmaps/x/nothing",
        "/apis/no.such.group/v1/things",
        "/not/an/api/path",
    ]:
        code, body = raw(api_client, "GET", path)
        assert code == 404, path
        assert body["kind"] == "Status" and body["reason"] == "NotFound", body
        assert body["message"] == "the server could not find the requested resource"
    assert core.read_namespace("default").metadata.name == "default"
