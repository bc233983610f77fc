"""Person detection for ROS 2: a ROS-free detector core and a thin rclpy node on top."""
