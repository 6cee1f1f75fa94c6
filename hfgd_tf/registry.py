"""String-keyed registries, so a flag value maps to a builder without if/elif chains."""

from typing import Callable, Dict, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
  """A named mapping from string keys to builders.

  Example:
    BACKBONES = Registry("backbone")

    @BACKBONES.register("resnet50")
    def build_resnet50(**kwargs): ...

    BACKBONES.get("resnet50")(output_stride=32)
  """

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: Dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def decorator(entry: T) -> T:
      if name in self._entries:
        raise ValueError(f"{self.kind} {name!r} is registered twice")
      self._entries[name] = entry
      return entry
    return decorator

  def get(self, name: str) -> T:
    if name not in self._entries:
      raise ValueError(
          f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}")
    return self._entries[name]

  def names(self):
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries
