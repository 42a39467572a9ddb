"""cafe_vision: the data engine's vision models, their presets, and the choices made on their outputs.

Import from the modules; this file imports nothing, so `cafe_vision.gates` and the other
numpy-only modules load without torch or transformers.

Models (torch, transformers, segment-anything):
    captioner.Captioner          images -> captions (BLIP, BLIP-2, GIT, ...)
    grounder.Grounder            images + one prompt each -> detection.Detection lists
    segmenter.Segmenter          images + boxes -> segmenter.MaskResult lists
    presets.get_preset(name)     tiny | medium | base | large -> presets.VisionPreset
    load.load_captioner / load_grounder / load_segmenter(preset, ...)   a preset's models, ready
Random models built offline and cached (model_cache): random_blip, random_grounding_dino, random_sam,
random_dino, random_clip (with clip_tokenizer: CLIP's tokenizer rebuilt from open_clip's BPE file);
SAM of any size: sam_model; official SAM checkpoints: sam_checkpoint.
Mask cleanup: mask_cleanup.clean_mask.

Scorers of generated candidates (self-improvement filter, `cafe eval`):
    scorers.Scorers(preset)              references + images + prompts + subjects -> scorers.CandidateScore list
                                         (dino, clip_i, clip_t, copy_paste, num_instances, subject_found)
    scorer_presets.get_scorer_preset(name)   tiny | base -> scorer_presets.ScorerPreset
Parts: dino_embedder.DinoEmbedder, clip_scorer.ClipScorer (CLIP-T as torchmetrics' CLIPScore),
subject_finder.SubjectFinder (Grounder + Segmenter), cutout (cut-outs on a plain background),
copy_paste.copy_paste_score (numpy only).
"""
