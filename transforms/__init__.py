"""MONAI-style transforms for mammography, ophthalmology, MRI and k-space (installed as ``medmoe.transforms``)."""

from .fundus_geometry import *  # noqa: F401,F403
from .io import *  # noqa: F401,F403
from .kspace import *  # noqa: F401,F403
from .kspace_augment import *  # noqa: F401,F403
from .kspace_keys import *  # noqa: F401,F403
from .mammography import *  # noqa: F401,F403
from .mammography_load import *  # noqa: F401,F403
from .mri import *  # noqa: F401,F403
from .oct import *  # noqa: F401,F403
from .ophthalmology import *  # noqa: F401,F403
from .optic_disc import *  # noqa: F401,F403
