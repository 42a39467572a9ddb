"""cafe_model: the customization model (a reference photo steers Stable Diffusion through decoupled cross-attention).

Import from the modules; this file imports nothing, so importing the package costs nothing.

    presets.get_preset(name)              tiny | tiny-dinov2 | sd15 | sd15-dinov2 | sd21 | sd21-dinov2 | sd15-random
    load.load_model(preset, ...)          -> customization_model.CustomizationModel (frozen base, trainable adapter)
    load.load_pipeline(preset, ...)       -> pipeline.CustomizationPipeline: (reference, prompt, ...) -> PIL images
    export.export_adapter(model, folder)  trained weights; stock `pipe.load_ip_adapter` reads the linear kind
    export.load_adapter(model, folder)    an export's weights back into a model

Parts: reference_encoder (frozen CLIP vision / DINOv2 -> features), projector (features -> reference
tokens), decoupled_attention (IP-Adapter attention processors in the UNet), guidance (two-condition
classifier-free guidance). Offline random models: random_diffusion, random_reference_encoder,
and cafe_vision.clip_tokenizer (SD's tokenizer rebuilt from open_clip's BPE file), cached by cafe_vision.model_cache.
"""
