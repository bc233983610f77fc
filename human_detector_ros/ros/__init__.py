"""The ROS 2 layer: the node, its parameters and messages, and helper programs over rclpy.

Everything outside this subpackage is ROS-free and usable as a plain Python library.
"""
