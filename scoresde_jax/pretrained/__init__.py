"""Pretrained models of other code bases, mapped onto this library's networks and SDEs.

:func:`load` (``scoresde_jax.pretrained.load(src)``) returns a :class:`Pretrained` whose
``score_fn`` every sampler, the likelihood and guidance take, and whose ``denoise`` is EDM's
``D(x; sigma)``:

* :mod:`.edm`: EDM network pickles (github.com/NVlabs/edm), read without executing code
  (:mod:`.safe_pickle`), onto :class:`scoresde_jax.models.song_unet.EDMSongUNet` and the SDE of
  their preconditioning (``VPPrecond``: VP, ``VEPrecond``: VE, ``EDMPrecond``: EDM's
  ``sigma(t) = t``);
* :mod:`.diffusers`: diffusers ``DDPMPipeline`` / ``ScoreSdeVePipeline`` folders (safetensors or
  ``.bin``, :mod:`.tensor_files`), onto :class:`scoresde_jax.models.diffusers_unet.UNet2DModel`;
* :mod:`.score_sde`: the official score_sde code's flax ``checkpoint_<step>`` files, onto the
  network of their config.

:mod:`.fixtures` writes small files in the EDM and diffusers formats (for demos and tests).
"""

from scoresde_jax.pretrained.api import FORMATS, detect_format, load
from scoresde_jax.pretrained.common import Pretrained, WeightMismatchError

__all__ = ["load", "detect_format", "FORMATS", "Pretrained", "WeightMismatchError"]
