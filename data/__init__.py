"""Small assets and tables the code needs (joint names and maps, default configs). Never licensed
model files."""
