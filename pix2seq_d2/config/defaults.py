"""`add_pix2seq_config`: every Pix2Seq knob, with its default and what it means.

The comment above a key (or beside it) is its documentation: ``docs/configuration.md`` is generated from
these comments and the rule table (:mod:`pix2seq_d2.config.reference`); a comment above ``X = CN()``
describes the node ``X``. After changing a key or its comment, run ``python tools/generate_config_reference.py``.
"""

from __future__ import annotations

from detectron2.config import CfgNode as CN


def add_pix2seq_config(cfg: CN) -> None:
    """Add the ``MODEL.PIX2SEQ`` and ``MODEL.SMALL_RESNET`` nodes (and a few solver keys) to ``cfg``."""
    cfg.MODEL.PIX2SEQ = CN()
    p = cfg.MODEL.PIX2SEQ
    # The task the decoder writes, by its name in pix2seq_d2.tasks.TASK_REGISTRY ("DetectionTask": objects as
    # box + class tokens). One task per model for now (docs/tasks.md: how to add a task).
    p.TASKS = ["DetectionTask"]
    # Number of dataset classes (class tokens): len(thing_classes) of your dataset, NOT its largest
    # category id. 0 ("auto"): taken at start-up from DATASETS.TRAIN[0] (DATASETS.TEST[0] when
    # there is no training set), from its metadata or its COCO json's "categories", without loading
    # the dataset; with a layout keyed by category ids and an empty TOKENIZER.CATEGORY_IDS, those
    # ids are filled in too (pix2seq_d2/config/dataset_checks.py: resolve_auto_settings). Every start-up
    # checks NUM_CLASSES (and CATEGORY_IDS) against the classes of DATASETS.TRAIN and .TEST.
    p.NUM_CLASSES = 80
    # ---- tokenizer ----
    # Quantisation bins per coordinate. The paper uses 1000 at 640 px and 2000 at 1333 px;
    # about one bin per pixel of the longest training side is plenty.
    p.NUM_BINS = 1000
    p.TOKENIZER = CN()
    # Vocabulary layout (pix2seq_d2/tasks/tokenizer.py): "pix2seq_d2" (compact: PAD EOS START NOISE,
    # classes, bins), "official" (google-research/pix2seq: 3000 tokens, class = 100 + category
    # id, bins from 1000, round(v * (B-1))) or "pretrained_pix2seq" (bins from 0, class = B +
    # category id, xyxy order). Converted checkpoints keep the layout they were trained with.
    p.TOKENIZER.LAYOUT = "pix2seq_d2"
    # Layouts keyed by category ids: the dataset category id of each contiguous class 0..C-1
    # (for COCO the 80 ids 1..90, sorted, as detectron2 maps them). Empty: 0..C-1 themselves
    # (with NUM_CLASSES 0: the dataset's ids). Checked against the datasets' ids at start-up.
    p.TOKENIZER.CATEGORY_IDS = []
    # Coordinates are fractions of this many pixels (the official models: the padded square
    # canvas, i.e. the image size; Pretrained-Pix2Seq: 1333). 0: of the image's own size.
    p.TOKENIZER.COORD_NORMALIZER = 0
    # Objects per training sequence: an image with more keeps a random subset of this many.
    p.MAX_OBJECTS = 100
    # Order of the objects in a sequence: "random" (re-drawn every time an image is loaded in
    # training, the paper's best; the file's order at test), "area" (largest first),
    # "distance" (top-left corner nearest the image's origin first), or "none" (file order).
    p.OBJECT_ORDER = "random"
    # Sequence augmentation: noise objects fill every training sequence up to MAX_OBJECTS
    # (see pix2seq_d2/tasks/sequence_augmentation.py). Models trained with it should be decoded with
    # DECODE.STOP_AT_EOS False.
    p.SEQ_AUG = CN()
    p.SEQ_AUG.ENABLED = False
    p.SEQ_AUG.NOISE_CLASS_WEIGHT = 1.0  # loss weight of a noise object's (NOISE) class target
    # Input class tokens: "none", "rand_cls", "real_n_fake_cls", "rand_n_fake_cls" (official
    # default) or "real_n_rand_n_fake_cls".
    p.SEQ_AUG.CLASS_CORRUPTION = "rand_n_fake_cls"
    p.SEQ_AUG.JITTER = 0.2  # "jitter" noise boxes: edges moved by N(0, JITTER x box size)
    p.SEQ_AUG.DUPLICATE_JITTER = 0.05  # "duplicate" noise boxes: edges moved by N(0, this x size)
    # ---- backbone feature and transformer ----
    # Which backbone output feeds the transformer encoder (e.g. "res5" of a ResNet).
    p.IN_FEATURE = "res5"
    # Backbone feature -> encoder width: "conv" (1x1 conv), "conv_gn" (1x1 conv + GroupNorm(32):
    # Pretrained-Pix2Seq), "linear_ln" (linear + LayerNorm on the flattened positions: official)
    # or "identity" (the backbone already gives HIDDEN_DIM channels: the official ViT).
    p.INPUT_PROJ = "conv"
    # Image positions: "sine" (DETR's 2-D sine, normalised by each image's extent, added to the
    # queries/keys of every encoder layer and to the decoder's cross-attention keys),
    # "sine_unnormalized" (the same on raw positions 1..n: Pretrained-Pix2Seq), "sincos" (the
    # official fixed 2-D sin-cos table added once to the encoder input, none inside attention)
    # or "none" (the backbone already added them: the official ViT).
    p.POSITION_ENCODING = "sine"
    # False: the encoder and the cross-attention also attend to batch padding (both peers do).
    p.USE_PADDING_MASK = True
    # > 0: every image is padded at the bottom/right to this square (the official models: the
    # image size), with PAD_VALUE (in normalised pixel units, i.e. after PIXEL_MEAN/PIXEL_STD).
    p.PAD_TO_SQUARE = 0
    p.PAD_VALUE = 0.0
    p.HIDDEN_DIM = 256  # transformer (encoder) width d
    p.NUM_HEADS = 8
    p.ENC_LAYERS = 6
    p.DEC_LAYERS = 6
    p.DIM_FEEDFORWARD = 1024
    # The decoder's own width, heads and FFN width (the official ViT models use a narrower
    # decoder than encoder); 0: the encoder's.
    p.DEC_HIDDEN_DIM = 0
    p.DEC_NUM_HEADS = 0
    p.DEC_DIM_FEEDFORWARD = 0
    # The official block between encoder and decoder: Linear(encoder -> decoder width) ->
    # LayerNorm -> + sin-cos positions -> one pre-norm residual MLP (hidden width: the decoder
    # width times DIM_FEEDFORWARD / HIDDEN_DIM). Cross-attention keys then get no positions.
    p.MEMORY_PROJECTION = False
    # "relu" (DETR, Pretrained-Pix2Seq) or "gelu" (exact, erf form: official) in every FFN.
    p.ACTIVATION = "relu"
    p.LAYER_NORM_EPS = 1e-5  # LayerNorm epsilon (the official models: 1e-6)
    # The decoder's position embedding: "learned" (one vector per position) or "none".
    p.DECODER_POSITIONS = "learned"
    # Rows of the learned decoder position embedding (the official checkpoints have 512);
    # 0: as many as the longest sequence (5 * max(MAX_OBJECTS, MAX_OBJECTS_TEST) + 1).
    p.MAX_SEQ_LEN = 0
    p.DROPOUT = 0.1
    # Stochastic depth: each residual branch of every encoder/decoder layer is dropped for this
    # fraction of the samples in training (the paper uses 0.1); 0 turns it off.
    p.DROP_PATH = 0.0
    # Layer norm before (True) or after (False, DETR's layout) each attention/FFN block.
    p.PRE_NORM = False
    # Tie the decoder's output projection to its token embedding (the official release does).
    p.SHARE_EMBEDDING = True
    # ---- loss ----
    # Weight of the end-of-sequence target token (real object tokens weigh 1).
    p.EOS_WEIGHT = 1.0
    # ---- decoding (inference); TEST.DETECTIONS_PER_IMAGE caps the detections returned ----
    # At most this many objects are decoded per image.
    p.MAX_OBJECTS_TEST = 100
    # Detections scoring below this are dropped from the returned Instances.
    p.SCORE_THRESH_TEST = 0.0
    p.DECODE = CN()
    d = p.DECODE
    # "greedy": the most likely allowed token; "sample": sampling shaped by TEMPERATURE,
    # TOP_K and TOP_P (the paper's best: nucleus sampling with TOP_P 0.4); "beam": beam search.
    d.STRATEGY = "greedy"
    d.TEMPERATURE = 1.0  # sample: logits are divided by it; 0 is greedy
    d.TOP_K = 0  # sample: only the K most likely allowed tokens (0: no limit)
    # sample: only the smallest set of tokens holding this probability (the paper's nucleus
    # sampling uses 0.4; 1.0: no limit)
    d.TOP_P = 0.4
    d.SEED = -1  # sample: seed for reproducible sampling (< 0: torch's global RNG)
    d.BEAM_SIZE = 4  # beam: hypotheses kept per image
    # beam: finished hypotheses rank by log-probability / num_objects ** LENGTH_PENALTY
    # (0 prefers short sequences; 1 ranks by mean log-probability per object).
    d.LENGTH_PENALTY = 1.0
    # True: an image stops at its own EOS. False: EOS is never generated and every image gets
    # exactly MAX_OBJECTS_TEST objects (what sequence-augmented models need; rank by SCORE).
    d.STOP_AT_EOS = True
    # Whether class slots may generate the noise ("fake") class token. Either way the reported
    # class is the most likely real class of the class slot.
    d.ALLOW_NOISE_CLASS = False
    # Detection score: "class" = probability of the reported class; "class_x_coords" = that
    # times the probabilities of the four generated coordinate tokens.
    d.SCORE = "class"
    # False: no grammar, any token the vocabulary layout lets the model emit may be generated
    # (decoding as the peers do; use with STOP_AT_EOS False). An object then counts when the
    # most likely token of the whole class range at its class slot is a dataset class.
    d.GRAMMAR = True
    # Nucleus rule: "at_least" keeps the smallest set of tokens holding at least TOP_P of the
    # probability; "at_most" (the official release) keeps the tokens whose cumulative
    # probability (most likely first, inclusive) is at most TOP_P, and at least the top one.
    d.TOP_P_RULE = "at_least"
    # Boxes from the "generated" coordinate tokens, or from the "argmax" coordinate token of each
    # coordinate slot (Pretrained-Pix2Seq's post-processing).
    d.BOX_FROM = "generated"

    # A ResNet of BasicBlocks with configurable widths, for small images and CPU training
    # (detectron2's build_resnet_backbone fixes R18/R34 at 64 stem channels).
    cfg.MODEL.SMALL_RESNET = CN()
    s = cfg.MODEL.SMALL_RESNET
    s.STEM_OUT_CHANNELS = 16  # output channels of the stem, one 3x3 stride-2 convolution
    s.WIDTHS = [16, 32, 64, 128]  # output channels of res2..res5
    s.DEPTHS = [1, 1, 1, 1]  # BasicBlocks per stage
    s.NORM = "BN"  # normalisation of the stem and blocks (a detectron2 get_norm name)
    s.OUT_FEATURES = ["res5"]  # the stages the backbone outputs

    # detectron2's ResNet stem max-pool pads 1 pixel on every side; "tf_same" pads like
    # TensorFlow's SAME (0 before / 1 after on even sizes), as the official checkpoints were
    # trained. Used by build_pix2seq_resnet_backbone.
    cfg.MODEL.RESNETS.STEM_POOL_PADDING = "symmetric"

    # The official Pix2Seq ViT (build_pix2seq_vit_backbone, pix2seq_d2/modeling/backbone/vit.py): patch embedding,
    # LayerNorm, fixed sin-cos positions, pre-norm GELU layers, final LayerNorm; its output
    # feature "vit" (stride PATCH_SIZE) feeds MODEL.PIX2SEQ with INPUT_PROJ "identity".
    cfg.MODEL.VIT = CN()
    cfg.MODEL.VIT.PATCH_SIZE = 16
    cfg.MODEL.VIT.EMBED_DIM = 768
    cfg.MODEL.VIT.DEPTH = 12
    cfg.MODEL.VIT.NUM_HEADS = 12
    cfg.MODEL.VIT.MLP_DIM = 3072
    cfg.MODEL.VIT.DROP_PATH = 0.0
    cfg.MODEL.VIT.LAYER_NORM_EPS = 1e-6

    # Test-time resizing: "shortest_edge" (detectron2's ResizeShortestEdge with
    # INPUT.MIN/MAX_SIZE_TEST) or "longest_side" (the official eval: the longest side becomes
    # INPUT.MAX_SIZE_TEST, aspect kept, antialiased bilinear on float pixels, sizes rounded half
    # to even).
    cfg.INPUT.RESIZE_TEST = "shortest_edge"

    # Evaluate the validation sequences' likelihood (NLL/perplexity by token kind, class accuracy;
    # see pix2seq_d2/evaluation/sequence_likelihood.py) next to COCO AP. The test mapper then also
    # tokenizes the annotations.
    cfg.TEST.SEQ_LIKELIHOOD = True

    # An exponential moving average of the weights, updated every step, saved in checkpoints
    # ("ema") and used for evaluation (see pix2seq_d2/modeling/ema.py).
    cfg.MODEL.EMA = CN()
    cfg.MODEL.EMA.ENABLED = False
    cfg.MODEL.EMA.DECAY = 0.9999

    # Mixed precision (SOLVER.AMP.ENABLED, detectron2's key): the autocast dtype. "auto" is
    # float16 with gradient scaling on a GPU and bfloat16 (no scaling) on the CPU.
    cfg.SOLVER.AMP.PRECISION = "auto"

    # The optimizer: "ADAMW" (AdamW with no weight decay on norms, biases and embeddings; see
    # pix2seq_d2/solver/build.py), the only one.
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BETAS = (0.9, 0.999)
    # The learning rate at the end of SOLVER.LR_SCHEDULER_NAME "WarmupLinearDecayLR" (warmup, then linear
    # decay: the paper's schedule), as a fraction of BASE_LR.
    cfg.SOLVER.END_LR_FACTOR = 0.01

    # ---- training image augmentation (pix2seq_d2/data/transforms.py) ----
    # All off by default: detectron2's ResizeShortestEdge (INPUT.MIN/MAX_SIZE_TRAIN) + RandomFlip.
    # Large-scale jitter (the paper's): INPUT.RANDOM_FLIP, then the image is resized to fit a
    # square of IMAGE_SIZE * s (s ~ U(MIN_SCALE, MAX_SCALE), aspect ratio kept), then a random
    # window of at most IMAGE_SIZE x IMAGE_SIZE is cropped (no pixel padding: the model pads the
    # batch and masks it). Replaces MIN/MAX_SIZE_TRAIN. Test images still use MIN/MAX_SIZE_TEST:
    # set both to IMAGE_SIZE (longest side IMAGE_SIZE, as LSJ at scale 1).
    cfg.INPUT.LSJ = CN()
    cfg.INPUT.LSJ.ENABLED = False
    cfg.INPUT.LSJ.IMAGE_SIZE = 640
    cfg.INPUT.LSJ.MIN_SCALE = 0.3  # smallest scale s (the paper's range: 0.3 - 2.0)
    cfg.INPUT.LSJ.MAX_SCALE = 2.0  # largest scale s
    # Colour distortion, after the geometric ops, in random order: brightness, contrast and
    # saturation factors drawn from [max(0, 1 - x), 1 + x], a hue rotation from [-HUE, HUE] turns
    # of the colour wheel (at most 0.5); 0 turns an op off. Needs INPUT.FORMAT "BGR" or "RGB".
    cfg.INPUT.COLOR_JITTER = CN()
    cfg.INPUT.COLOR_JITTER.ENABLED = False
    cfg.INPUT.COLOR_JITTER.BRIGHTNESS = 0.4
    cfg.INPUT.COLOR_JITTER.CONTRAST = 0.4
    cfg.INPUT.COLOR_JITTER.SATURATION = 0.4
    cfg.INPUT.COLOR_JITTER.HUE = 0.1
    # Multi-crop: each training image is read once and augmented NUM_VIEWS times independently
    # (each view with its own object order and sequence); the model trains on every view, so a
    # step sees SOLVER.IMS_PER_BATCH x NUM_VIEWS sequences. 1: off.
    cfg.INPUT.MULTI_CROP = CN()
    cfg.INPUT.MULTI_CROP.NUM_VIEWS = 1

    # COCO API that computes the box AP/AR (see pix2seq_d2/evaluation/coco_evaluation.py): "pycocotools" (the
    # official one), "faster_coco_eval" (same numbers, C++, several times faster; an error if the
    # package is missing) or "auto" (faster_coco_eval when installed, else pycocotools + a warning).
    cfg.TEST.COCO_EVAL_BACKEND = "auto"

    # Your own COCO-format datasets, registered by name (pix2seq_d2/data/datasets/register_coco.py) so that
    # DATASETS.TRAIN/TEST can use them: a list of [name, json_file, image_root] entries, e.g. in a
    # yaml "COCO: [[mydata_train, data/train.json, data/images], [mydata_val, ...]]" or on the
    # command line DATASETS.COCO "[['mydata_train', 'data/train.json', 'data/images']]". Relative
    # paths are relative to the working directory. A broken json is an error naming the file and
    # the item; unusable boxes are skipped with a warning.
    cfg.DATASETS.COCO = []
