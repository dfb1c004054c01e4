"""The Pix2Seq model of configs/Base-Pix2Seq.yaml: an ImageNet-style ResNet-50 whose last stage (res5)
feeds a transformer encoder, and an autoregressive decoder that writes each object as 5 tokens
(4 quantised box coordinates, then the class). The keys follow ``MODEL.PIX2SEQ`` (pix2seq_d2/config/defaults.py
explains each); derived sizes are interpolations, so overriding one setting keeps the others consistent.
"""

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import BasicStem, ResNet

from pix2seq_d2.modeling.meta_arch.pix2seq import Pix2Seq, token_decoder
from pix2seq_d2.modeling.transformer import TransformerEncoder
from pix2seq_d2.tasks import DecodingOptions, DetectionTask, Pix2SeqTokenizer

model = L(Pix2Seq)(
    # ---- backbone: detectron2's R-50 (build_resnet_backbone, MODEL.RESNETS), nothing frozen ----
    backbone=L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
        stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=True, norm="FrozenBN"),
        out_features=["res5"],
        freeze_at=0,
    ),
    in_feature="res5",  # IN_FEATURE: the backbone output the encoder reads
    # ---- transformer encoder (HIDDEN_DIM, NUM_HEADS, ENC_LAYERS, DIM_FEEDFORWARD, ...) ----
    encoder=L(TransformerEncoder)(
        num_layers=6,
        dim=256,
        num_heads=8,
        ffn_dim=1024,
        dropout=0.1,
        pre_norm=False,  # DETR's post-norm layers
        drop_path=0.0,  # stochastic depth of every residual branch (the paper: 0.1)
        activation="relu",
        norm_eps=1e-5,
    ),
    # ---- token decoder: its vocabulary comes from the task's tokenizer; width etc. default to the encoder's ----
    decoder=L(token_decoder)(
        task="${..task}",
        max_objects="${..task.max_objects}",  # the decoder's positions hold sequences of this many objects
        num_layers=6,  # DEC_LAYERS
        dim="${..encoder.dim}",
        num_heads="${..encoder.num_heads}",
        ffn_dim="${..encoder.ffn_dim}",
        dropout="${..encoder.dropout}",
        pre_norm="${..encoder.pre_norm}",
        drop_path="${..encoder.drop_path}",
        activation="${..encoder.activation}",
        norm_eps="${..encoder.norm_eps}",
        share_embedding=True,  # the output projection is the token embedding (official release)
        learned_positions=True,  # DECODER_POSITIONS "learned"
    ),
    # ---- input: detectron2's BGR ImageNet normalisation (MODEL.PIXEL_MEAN / PIXEL_STD) ----
    pixel_mean=[103.530, 116.280, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
    input_proj="conv",  # backbone channels -> encoder width: a 1x1 convolution
    position_encoding="sine",  # DETR's 2-D sine positions in every encoder layer
    use_padding_mask=True,
    pad_to_square=0,
    pad_value=0.0,
    memory_projection=None,
    norm_eps="${.encoder.norm_eps}",
    # ---- the task: object detection, 5 tokens per object (MODEL.PIX2SEQ.TASKS ["DetectionTask"]) ----
    task=L(DetectionTask)(
        # the vocabulary: PAD EOS START NOISE, one token per class, one per coordinate bin
        tokenizer=L(Pix2SeqTokenizer)(
            num_classes=80,  # len(thing_classes) of the dataset
            num_bins=1000,  # coordinate bins (the paper: 1000 at 640 px)
            eos_weight=1.0,  # loss weight of the EOS target
            layout="pix2seq_d2",
            category_ids=[],
            coord_normalizer=0,
        ),
        # Objects per sequence: the training sequences keep at most this many (MAX_OBJECTS), the decoder's
        # positions hold this many and decoding writes at most this many.
        max_objects=100,
        object_order="random",  # a new random object order every time an image is loaded (OBJECT_ORDER)
        sequence_augmentation=None,  # SEQ_AUG off
        # inference: how objects are decoded (MODEL.PIX2SEQ.DECODE) and which are returned
        decoding=L(DecodingOptions)(
            strategy="greedy",  # or "sample" (nucleus sampling with top_p) or "beam"
            temperature=1.0,
            top_k=0,
            top_p=0.4,
            beam_size=4,
            length_penalty=1.0,
            max_objects="${..max_objects}",  # MAX_OBJECTS_TEST
            stop_at_eos=True,  # False: always max_objects objects, ranked by score (sequence augmentation)
            allow_noise_class=False,
            seed=-1,  # >= 0: reproducible sampling
            grammar=True,
            top_p_rule="at_least",
            box_from="generated",
        ),
        score_mode="class",  # DECODE.SCORE: the probability of the reported class
        score_thresh_test=0.0,
        detections_per_image=100,  # TEST.DETECTIONS_PER_IMAGE
    ),
)
