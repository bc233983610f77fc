"""STAND-IN for Humble's rclpy event callbacks, for a node process started with this folder on
PYTHONPATH: SubscriptionEventCallbacks takes only the arguments Humble's takes (no `matched`,
which came with Iron), so the node runs the code path it runs on Humble."""
from rclpy import event_handler

_Callbacks = event_handler.SubscriptionEventCallbacks


class HumbleSubscriptionEventCallbacks(_Callbacks):
    """Humble's signature (rclpy 3.3 qos_event.SubscriptionEventCallbacks)."""

    def __init__(self, *, deadline=None, incompatible_qos=None, liveliness=None,
                 message_lost=None, use_default_callbacks=True) -> None:
        super().__init__(deadline=deadline, incompatible_qos=incompatible_qos,
                         liveliness=liveliness, message_lost=message_lost,
                         use_default_callbacks=use_default_callbacks)


event_handler.SubscriptionEventCallbacks = HumbleSubscriptionEventCallbacks
