"""ros2 launch partglee_ros partglee.launch.py [namespace:=...] [params_file:=...] [image_topic:=...] ...

A thin wrapper: every argument maps to one node parameter or one topic remap, from the table in
partglee_ros/ros/launch_arguments.py (the tests start the equivalent command line, since `ros2 launch` is not
installable from PyPI). Parameters set by arguments override the params file.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from partglee_ros.ros.launch_arguments import ARGUMENTS


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory("partglee_ros"))
    arguments = [
        DeclareLaunchArgument(
            "namespace", default_value="", description="namespace of the node and its topics"
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=str(share / "config" / "partglee.yaml"),
            description="node parameters",
        ),
    ]
    arguments += [
        DeclareLaunchArgument(name, default_value=default, description=f"{kind} {target}")
        for name, (kind, target, default) in ARGUMENTS.items()
    ]
    params = {
        target: LaunchConfiguration(name) for name, (kind, target, _) in ARGUMENTS.items() if kind == "param"
    }
    remaps = [
        (target, LaunchConfiguration(name))
        for name, (kind, target, _) in ARGUMENTS.items()
        if kind == "remap"
    ]
    node = Node(
        package="partglee_ros",
        executable="partglee_node",
        name="partglee",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), params],
        remappings=remaps,
        output="screen",
    )
    return LaunchDescription([*arguments, node])
