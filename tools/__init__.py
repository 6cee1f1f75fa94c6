"""Command-line programs over the library: checking (`verify_dataset`) and picturing
(`visualize_dataset`) a converted dataset through the reader training uses. They sit above
hfgd_tf/ and datasets/, which never import them (tests/test_imports.py)."""
