"""nginx configurations for the performance benchmark, everything under one prefix on loopback."""

from __future__ import annotations

from pathlib import Path

from .topology import HOST


def _write(prefix: Path, http_block: str) -> Path:
    """A one-worker nginx.conf (like one gateway process) whose temp files, pid and log stay in ``prefix``."""
    temp = prefix / "tmp"
    temp.mkdir(parents=True, exist_ok=True)
    text = f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy; fastcgi_temp_path {temp}/fastcgi;
  uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;
{http_block}
}}
"""
    path = prefix / "nginx.conf"
    path.write_text(text)
    return path


def nginx_config(prefix: Path, port: int, edge_urls: list[str]) -> Path:
    """The contender: least_conn + keepalive over the edges, proxying ``/`` to their ``/hello``."""
    servers = "\n".join(f"    server {url.removeprefix('http://')};" for url in edge_urls)
    return _write(
        prefix,
        f"""  upstream edges {{
    least_conn;
{servers}
    keepalive 128;
  }}
  server {{
    listen {HOST}:{port};
    location / {{
      proxy_pass http://edges/hello;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      # The edges answer only to loopback names (their Host allowlist), not to "edges".
      proxy_set_header Host {HOST};
    }}
  }}""",
    )


def constant_config(prefix: Path, port: int) -> Path:
    """A near-zero-cost upstream: every path answers 200 "world", as an edge's /hello does."""
    return _write(
        prefix,
        f"""  server {{
    listen {HOST}:{port};
    location / {{
      default_type text/plain;
      return 200 "world";
    }}
  }}""",
    )
