"""Open3D views of LiDAR scenes, boxes and the active voxels of sparse layers, in a window or headless."""
from visualization.active_sites import LayerSites, capture_active_sites, compare_active_sites, sparse_layer_names
from visualization.panels import layer_panels, scene_panel
from visualization.render import Panel, display_available, render_png, show_window

__all__ = ["LayerSites", "Panel", "capture_active_sites", "compare_active_sites", "display_available",
           "layer_panels", "render_png", "scene_panel", "show_window", "sparse_layer_names"]
