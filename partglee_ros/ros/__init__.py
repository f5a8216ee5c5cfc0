"""The ROS 2 layer: a thin adapter between rclpy messages/services and the ROS-free runtime."""
