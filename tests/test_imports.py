"""The import graph of the project's own modules, read from the source (no module is imported):
no cycles, the library (hfgd_tf/, datasets/) never reaches up into the benchmarks/ and tools/
programs, datasets/ sits below the library modules that read it, and the data path
(hfgd_tf/data/) stays a wing of its own."""

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("hfgd_tf", "datasets", "benchmarks", "tools")


def _module_name(path):
  """hfgd_tf/data/pipeline.py -> hfgd_tf.data.pipeline; a package's __init__.py -> the package."""
  parts = os.path.relpath(path, ROOT)[:-len(".py")].split(os.sep)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name):
  base = os.path.join(ROOT, *name.split("."))
  return os.path.isfile(base + ".py") or os.path.isfile(os.path.join(base, "__init__.py"))


def _imported_modules(path):
  """The project modules `path` imports anywhere in it (top level or inside functions)."""
  imported = set()
  for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      # `from a import b` imports the module a.b when there is one, else a name of a.
      names = [f"{node.module}.{alias.name}" if _is_module(f"{node.module}.{alias.name}")
               else node.module for alias in node.names]
    else:
      continue
    imported.update(name for name in names if name.split(".")[0] in PACKAGES + ("main",))
  return imported


def import_graph():
  """{module: the project modules it imports} over PACKAGES and main.py."""
  paths = [os.path.join(ROOT, "main.py")]
  for package in PACKAGES:
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
      paths += [os.path.join(folder, name) for name in files if name.endswith(".py")]
  return {_module_name(path): _imported_modules(path) for path in paths}


def find_cycle(graph):
  """One import cycle as [a, b, ..., a], or None (depth-first search for a back edge)."""
  state, stack = {}, []

  def visit(module):
    state[module] = "open"
    stack.append(module)
    for target in sorted(graph.get(module, ())):
      if target == module:
        continue  # `from datasets import core` inside datasets/__init__.py names a submodule
      if state.get(target) == "open":
        return stack[stack.index(target):] + [target]
      if target not in state:
        cycle = visit(target)
        if cycle:
          return cycle
    stack.pop()
    state[module] = "done"
    return None

  for module in sorted(graph):
    if module not in state:
      cycle = visit(module)
      if cycle:
        return cycle
  return None


def test_find_cycle_finds_a_cycle_through_a_function_level_import():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) is None
  graph = import_graph()
  assert "hfgd_tf.data.tfds_source" in graph["hfgd_tf.data.pipeline"]  # imported in a function


def test_no_import_cycles():
  assert find_cycle(import_graph()) is None


def test_the_library_never_imports_the_programs_above_it():
  graph = import_graph()
  offenders = {module: sorted(name for name in imports
                              if name.split(".")[0] in ("benchmarks", "tools"))
               for module, imports in graph.items()
               if module.split(".")[0] in ("hfgd_tf", "datasets")}
  assert {module: names for module, names in offenders.items() if names} == {}


def _reached(graph, module):
  """Every project module `module` imports, directly or through others."""
  reached, todo = set(), [module]
  while todo:
    for name in graph.get(todo.pop(), ()):
      if name not in reached:
        reached.add(name)
        todo.append(name)
  return reached


def test_datasets_import_from_the_library_only_modules_below_them():
  # hfgd_tf/ reads datasets/ (records, registry, adapters); datasets/ may use hfgd_tf's base
  # modules (config, atomic_files, registry), never one that reads datasets/ back, such as the
  # data path: a program reading through that lives in tools/.
  graph = import_graph()
  climbing = {module: sorted(name for name in imports if name.startswith("hfgd_tf")
                             and any(reached.split(".")[0] == "datasets"
                                     for reached in _reached(graph, name)))
              for module, imports in graph.items() if module.split(".")[0] == "datasets"}
  assert {module: names for module, names in climbing.items() if names} == {}


def test_the_data_path_imports_only_config_ops_and_itself_from_hfgd_tf():
  allowed = {"hfgd_tf.config", "hfgd_tf.ops"}
  reached = {name for module, imports in import_graph().items()
             if module.startswith("hfgd_tf.data") for name in imports
             if name.startswith("hfgd_tf.") and not name.startswith("hfgd_tf.data")}
  assert reached <= allowed


def test_evaluation_predict_and_export_run_the_one_inference_protocol():
  """Each of the three imports hfgd_tf/inference.py, and only it names the protocol's parts."""
  graph = import_graph()
  assert all("hfgd_tf.inference" in graph[f"hfgd_tf.{name}"]
             for name in ("evaluation", "predict", "export"))
  protocol_parts = {"multi_scale_logits", "sliding_window_logits", "scaled_size"}
  naming = set()
  for folder, _, files in os.walk(os.path.join(ROOT, "hfgd_tf")):
    for name in files:
      path = os.path.join(folder, name)
      if name.endswith(".py") and _module_name(path) != "hfgd_tf.inference":
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        if any(isinstance(node, (ast.Name, ast.alias, ast.FunctionDef, ast.Attribute))
               and protocol_parts & {getattr(node, attr, None) for attr in ("id", "name", "attr")}
               for node in ast.walk(tree)):
          naming.add(_module_name(path))
  assert naming == set()


# Packages whose modules their own docstring maps (hfgd_tf/flags/__init__.py, backbones' files by
# family): the README names the folder.
MAPPED_BY_THEIR_PACKAGE = ("hfgd_tf.flags.", "hfgd_tf.modeling.backbones.")


def test_the_readme_names_every_module():
  readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  missing = []
  for module in import_graph():
    if module.startswith(MAPPED_BY_THEIR_PACKAGE):
      continue
    is_package = os.path.isdir(os.path.join(ROOT, *module.split(".")))
    name = module.split(".")[-1] + ("/" if is_package else ".py")
    # Whole names: self_attention.py does not name attention.py.
    if not re.search(r"(?<![\w])" + re.escape(name), readme):
      missing.append(module)
  assert missing == []
