"""Fixtures for the sandbox suite: the official `kubernetes` client configured from the
kubeconfig tests/python_client.rs writes (KUBECONFIG), and a fresh namespace per test."""

import os
import uuid

import pytest
from kubernetes import client, config


@pytest.fixture(scope="session")
def api_client():
    path = os.environ.get("KUBECONFIG")
    assert path, "KUBECONFIG must name the sandbox's kubeconfig (tests/python_client.rs sets it)"
    config.load_kube_config(config_file=path)
    return client.ApiClient()


@pytest.fixture(scope="session")
def core(api_client):
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def apps(api_client):
    return client.AppsV1Api(api_client)


@pytest.fixture()
def ns(core):
    name = "py-" + uuid.uuid4().hex[:8]
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)
