"""Stand-in for bondpy.bondpy (bond_core's Python bond; apt only, not on PyPI).

Test-only: it has the members of the real Bond that the node uses and logs each call through
the node's logger, so that a test can see from the node's output which bond was made and when
it was broken. It exchanges no heartbeats.
"""
from typing import Any

PREFIX = 'bondpy stand-in:'


class Bond:
    def __init__(self, node: Any, topic: str, id: str) -> None:
        self.node, self.topic, self.id = node, topic, id
        self.heartbeat_period = 1.0
        self.heartbeat_timeout = 4.0

    def start(self) -> None:
        self.node.get_logger().info(
            f'{PREFIX} start topic={self.topic} id={self.id} '
            f'heartbeat_period={self.heartbeat_period} heartbeat_timeout={self.heartbeat_timeout}')

    def break_bond(self) -> None:
        self.node.get_logger().info(f'{PREFIX} break_bond id={self.id}')
