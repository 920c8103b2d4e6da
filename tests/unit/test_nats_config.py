"""The nats-server config that scripts/processes.py writes: values, blocks, routes and extra text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scripts.processes import NatsRoutes, NatsServer, Verbatim, render_config


@pytest.mark.parametrize(
    ("settings", "text"),
    [
        ({"port": 4222}, "port: 4222"),
        ({"debug": False, "trace": True}, "debug: false\ntrace: true"),
        ({"listen": "127.0.0.1:4222"}, 'listen: "127.0.0.1:4222"'),
        ({"password": 'a "quoted" word'}, 'password: "a \\"quoted\\" word"'),
        ({"store_dir": Path("/tmp/x y")}, 'store_dir: "/tmp/x y"'),
        ({"max_file_store": Verbatim("4GB")}, "max_file_store: 4GB"),
        ({"routes": ["a", "b"]}, 'routes: ["a", "b"]'),
        ({"not-a-bare-key": 1}, '"not-a-bare-key": 1'),
        ({"tls": {}}, "tls: {}"),
        ({"tls": {"cert_file": "c.pem", "verify": True}}, 'tls: {\n  cert_file: "c.pem"\n  verify: true\n}'),
    ],
    ids=["int", "bool", "str", "escaped", "path", "verbatim", "list", "quoted-key", "empty-block", "block"],
)
def test_render_config(settings: dict[str, Any], text: str) -> None:
    assert render_config(settings) == text


def test_nested_blocks_are_indented() -> None:
    accounts = {"accounts": {"APP": {"users": [{"user": "app", "password": "pw"}]}}}
    assert render_config(accounts) == (
        'accounts: {\n  APP: {\n    users: [{\n      user: "app"\n      password: "pw"\n    }]\n  }\n}'
    )


def test_a_private_server_has_its_port_store_and_jetstream(tmp_path: Path) -> None:
    server = NatsServer(workdir=tmp_path, port=4999)
    assert server.url == "nats://127.0.0.1:4999"
    assert server.config_text() == (
        f'server_name: "nats"\nlisten: "127.0.0.1:4999"\njetstream: {{\n  store_dir: "{tmp_path / "nats"}"\n}}\n'
    )
    assert server.command()[-2:] == ["-c", str(tmp_path / "nats.conf")]


def test_jetstream_off_leaves_the_block_out(tmp_path: Path) -> None:
    assert "jetstream" not in NatsServer(workdir=tmp_path, jetstream=False).config_text()


def test_a_cluster_node_has_monitoring_limits_and_routes(tmp_path: Path) -> None:
    node = NatsServer(
        workdir=tmp_path,
        name="n2",
        port=4223,
        monitor_port=8223,
        jetstream_limits={"max_file_store": Verbatim("4GB")},
        routes=NatsRoutes("local", 6223, [6222, 6223, 6224]),
    )
    text = node.config_text()
    assert 'server_name: "n2"\n' in text
    assert 'http: "127.0.0.1:8223"\n' in text
    assert f'store_dir: "{tmp_path / "n2"}"\n  max_file_store: 4GB\n' in text
    routes = ", ".join(f'"nats-route://127.0.0.1:{port}"' for port in (6222, 6223, 6224))
    assert f'cluster: {{\n  name: "local"\n  listen: "127.0.0.1:6223"\n  routes: [{routes}]\n}}\n' in text


def test_options_and_extra_config_come_after_the_generated_settings(tmp_path: Path) -> None:
    server = NatsServer(
        workdir=tmp_path,
        jetstream=False,
        options={"authorization": {"token": "s3cret"}},
        extra_config="include ./tls.conf\n",
    )
    assert server.config_text().endswith('authorization: {\n  token: "s3cret"\n}\ninclude ./tls.conf\n')
