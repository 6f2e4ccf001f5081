"""The training stage: a pretrained backbone fine-tuned with transformers' Trainer on a prepared dataset.

    config       -- the options of a run, typed (DataArguments, RunArguments, TrainingArguments), parsed once
    run          -- the command: the story of one run, from the data to the published model folder and the pushes
    launcher     -- several processes (torchrun, accelerate launch) behaving like one run
    backbones    -- base model resolution, offline EfficientNet-Lite conversion, a new head for our classes
    base_model   -- the base model of a run: sized (training crops, larger evaluation size), early layers frozen
    image_cache  -- every image decoded once (RAM, or memory-mapped files under a launcher)
    augment      -- training augmentation on the cached images with torch ops (no torchvision)
    balancing    -- class-imbalance compensation: balanced sampling or a class-weighted loss
    trainer      -- our Trainer: frozen batch norms, channels-last, mixup, head/backbone learning rates
    frozen_prefix -- the frozen stem and early blocks run as one folded inference network (a faster step)
    ema          -- each member's weights averaged along its run (EMA), kept where it scores higher on validation
    soup         -- several members trained and averaged into one model (a model soup)
    distill      -- --unlabeled-dir: the shipped model teaches a student on labelled + unlabelled images
    checkpoints  -- checkpoints --resume can trust (run.json: the data, classes and flags they belong to)
    evaluation   -- accuracy, macro-F1, per-class report, confusion matrix (an `evaluate` metric)
    reports      -- what a finished run computes for its model folder: metrics, figures, examples, card, record

Imports the dataset stage, the model folder package and the shared modules; never the serving stage.
"""
