"""STAND-IN for an RMW without message-lost and matched events, for a node process started with
this folder on PYTHONPATH: creating either event handler raises UnsupportedEventTypeError,
where and as rclpy raises it when the RMW answers RMW_RET_UNSUPPORTED."""
from rclpy import event_handler

_EventHandler = event_handler.EventHandler
_UNSUPPORTED = (event_handler.QoSSubscriptionEventType.RCL_SUBSCRIPTION_MESSAGE_LOST,
                event_handler.QoSSubscriptionEventType.RCL_SUBSCRIPTION_MATCHED)


def _event_handler(*args, event_type, **kwargs):
    if event_type in _UNSUPPORTED:
        raise event_handler.UnsupportedEventTypeError(f'{event_type} is not supported')
    return _EventHandler(*args, event_type=event_type, **kwargs)


event_handler.EventHandler = _event_handler
