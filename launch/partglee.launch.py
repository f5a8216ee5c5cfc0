"""ros2 launch partglee_ros partglee.launch.py [namespace:=...] [params_file:=...] [image_topic:=...] ...

A thin wrapper: every argument maps to one node parameter or one topic remap, from the table in
partglee_ros/ros/launch_arguments.py (the tests start the equivalent command line, since `ros2 launch` is not
installable from PyPI). Parameters set by arguments override the params file. `dds_profile` is the Fast DDS
profile the node runs with (config/fastdds_large_data.xml unless $FASTDDS_DEFAULT_PROFILES_FILE names one;
'' for Fast DDS's defaults).
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchContext, LaunchDescription
from partglee_ros.ros.dds_profile import dds_environment, default_dds_profile
from partglee_ros.ros.launch_arguments import ARGUMENTS, parameter_type


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
        DeclareLaunchArgument(
            "dds_profile",
            default_value=default_dds_profile(),
            description="Fast DDS XML profile of the node process ('' = Fast DDS's defaults)",
        ),
    ]
    arguments += [
        DeclareLaunchArgument(name, default_value=default, description=f"{kind} {target}")
        for name, (kind, target, default) in ARGUMENTS.items()
    ]
    # typed: launch_ros reads a bare substitution as YAML, and the default model_path '' would become null
    params = {
        target: ParameterValue(LaunchConfiguration(name), value_type=parameter_type(target))
        for name, (kind, target, _) in ARGUMENTS.items()
        if kind == "param"
    }
    remaps = [
        (target, LaunchConfiguration(name))
        for name, (kind, target, _) in ARGUMENTS.items()
        if kind == "remap"
    ]

    def node(context: LaunchContext) -> list[Node]:
        return [
            Node(
                package="partglee_ros",
                executable="partglee_node",
                name="partglee",
                namespace=LaunchConfiguration("namespace"),
                parameters=[LaunchConfiguration("params_file"), params],
                remappings=remaps,
                additional_env=dds_environment(LaunchConfiguration("dds_profile").perform(context)),
                output="screen",
            )
        ]

    return LaunchDescription([*arguments, OpaqueFunction(function=node)])
