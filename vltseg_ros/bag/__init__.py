"""Rosbag replay: `vltseg-ros bag make|eval|play`.

    make     image folder / video / dataset split / synthetic drive -> a ROS 2 bag (mcap, sqlite3)
    eval     a bag through the node's frame path, offline (in-process) or live (the node over
             DDS), scored against the bag's ground truth -> output bag, JSON/Markdown, plots
    play     a bag's topics published at real time x rate (with /clock), for users without
             `ros2 bag play`

One file per concern: `types` (type store + CDR), `read` (open, find topics, frames), `make`,
`score` (pairing + metrics), `offline`, `live`, `play`, `report`, `cli`.
"""
