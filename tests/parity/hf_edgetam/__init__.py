"""Test-only excerpts of transformers' EdgeTAM conversion scripts (see each module's header for the origin).

transformers 5.25's wheel does not ship ``convert_edgetam_to_hf.py`` / ``convert_edgetam_video_to_hf.py``, so the
parity tests cannot import them; these modules hold the scripts' key-mapping parts unchanged (the parts that need
the hub, timm or a GPU — ``get_config``, the sanity check, ``__main__`` — are left out). Never imported by the
package.
"""
