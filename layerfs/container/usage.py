"""What keeps an image in use: a container made from it, or a mount of it.

`rmi` asks this before it lets an image's last name go, and so will every other
caller that removes images (the service, the launcher): one rule, in one place.
"""

from __future__ import annotations

from collections.abc import Callable

from layerfs.container.records import Containers
from layerfs.image.catalog import Image, Use
from layerfs.store.layout import Store
from layerfs.union.mounts import mounted_images


def image_use(store: Store) -> Callable[[Image], Use | None]:
    """What uses an image, if anything, as it stands now: call it with the store locked,
    since containers are created under the lock."""
    containers = Containers(store)
    mounted = mounted_images(store)

    def use_of(image: Image) -> Use | None:
        if image.id in mounted:
            return Use(f"mounted at {mounted[image.id]}", "umount it")
        users = containers.using_image(image.id)
        return Use(f"used by container {users[0].name}", "remove the container") if users else None
    return use_of
