"""SAM's mask decoder run once over the boxes of many images (segment-anything's `Sam.forward` runs it per image).

`Sam.forward` encodes a batch of images together, then loops over the images, decoding each
one's boxes in its own `MaskDecoder` call, and upsamples all three candidate masks of every box
to the input and the original size. For small images with one box each, as a self-improvement
round's candidates are, that loop costs several times the image encoder. `decode_boxes` computes
what `MaskDecoder.predict_masks` computes, with each box's row of the image embeddings taken from
its own image, in one call for all boxes; it returns the low-resolution logits, and the caller
upsamples only the mask it keeps.
"""

from __future__ import annotations

import torch
from segment_anything.modeling import Sam


@torch.inference_mode()
def decode_boxes(
    model: Sam, image_embeddings: torch.Tensor, owners: torch.Tensor, boxes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's three candidate masks for each box, as `Sam.forward(..., multimask_output=True)` gives them.

    image_embeddings: (B, C, h, w), `model.image_encoder`'s output for B images.
    owners: (N,) int64, the image (row of `image_embeddings`) each box belongs to.
    boxes: (N, 4) float, x0 y0 x1 y1 in the encoder's input frame (as `Sam.forward` takes them).
    Returns (low_res_logits (N, 3, 4h, 4w), iou_predictions (N, 3)).
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4 or owners.shape != (boxes.shape[0],):
        raise ValueError(f"need (N, 4) boxes and (N,) owners, got {tuple(boxes.shape)} and {tuple(owners.shape)}")
    decoder = model.mask_decoder
    sparse, dense = model.prompt_encoder(points=None, boxes=boxes, masks=None)
    count = boxes.shape[0]
    # From here on MaskDecoder.predict_masks, except that `src` is each box's own image's row
    # rather than one image's embedding repeated for all boxes.
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(count, -1, -1), sparse), dim=1)
    src = image_embeddings[owners] + dense
    pos_src = model.prompt_encoder.get_dense_pe().expand(count, -1, -1, -1)
    b, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos_src, tokens)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : (1 + decoder.num_mask_tokens), :]
    upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    iou_pred = decoder.iou_prediction_head(iou_token_out)
    # multimask_output=True: the three disambiguating masks, not the single-mask token's.
    return masks[:, 1:], iou_pred[:, 1:]
