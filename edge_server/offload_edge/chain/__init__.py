"""The edge's EVM side: an embedded dev chain served as JSON-RPC, or a relay to one."""
