#!/usr/bin/env python
"""The example experiment: train a classifier and record the run with Sacred.

    .venv/bin/python main.py                        # LeNet-5 on MNIST (downloads into datasets/)
    .venv/bin/python main.py with dataset=digits    # offline: scikit-learn's 8x8 digits
    .venv/bin/python main.py with n_epochs=10 device=cuda:0
    .venv/bin/python main.py with cifar10_resnet18 lr=0.05
    .venv/bin/python main.py test with checkpoint=runs/3/best.pt
    .venv/bin/python main.py predict with checkpoint=runs/3/best.pt input=photos/
    .venv/bin/python main.py print_config

Copy this file to start your own experiment: change the config below, or subclass MLProject as
`Project`, override get_dataset_factory / get_model, and train `Project.from_run(_run)`: runs then
check their config with `Project.check_config` (see README.md, "Your own project").
"""

import os

from mlproj.record.experiment import create_experiment, test_checkpoint

ex = create_experiment("mlproj")


@ex.config
def config():
    dataset = "mnist"  # mnist | fashion_mnist | cifar10 | cifar100 | cluttered_mnist | digits | image_folder
    model = "lenet"  # mlp | lenet | resnet18 | torchvision.<builder> (`mlproj models` lists them)
    pretrained = None  # a local state_dict to start from
    data_dir = os.environ.get("DATA_DIR", "datasets")  # the data root
    download = True  # fetch missing dataset files (needs the internet)
    verify_checksums = True  # check torchvision's md5 of CIFAR batches
    val_fraction = 0.1  # carved from the training set with a fixed seed
    image_size = 64  # image_folder: images become image_size x image_size
    augment = True  # image_folder: random crop and flip of training batches
    batch_size = 64
    optimizer = "adam"  # adam | sgd
    lr = 1e-3
    weight_decay = 0.0
    scheduler = "none"  # none | cosine | step | onecycle | plateau (see README, "Config")
    warmup_steps = 0  # optimizer steps of linear warmup to lr
    step_size = 1  # scheduler=step: epochs between lr *= gamma
    gamma = 0.1  # scheduler=step or plateau: the lr's factor
    plateau_patience = 10  # scheduler=plateau: evaluations without improvement before lr *= gamma
    label_smoothing = 0.0  # the cross-entropy's label smoothing
    n_epochs = 10
    n_global_iterations = None  # optimizer steps; wins over n_epochs when given
    checkpoint = None  # the checkpoint the `test` and `predict` commands use
    input = None  # predict: an image file or a folder of images
    output = None  # predict: the CSV written (None: predictions.csv beside the checkpoint)
    top_k = 3  # predict: the most likely classes listed per image


@ex.named_config
def digits_mlp():
    dataset = "digits"
    model = "mlp"
    n_epochs = 20


@ex.named_config
def mnist_lenet():
    dataset = "mnist"
    model = "lenet"
    n_epochs = 10


@ex.named_config
def cifar10_resnet18():
    dataset = "cifar10"
    model = "resnet18"
    optimizer = "sgd"
    lr = 0.05
    weight_decay = 5e-4
    batch_size = 128
    n_epochs = 30


@ex.main
def train(_run):
    """Train, then report the best validation score as the run's result."""
    from mlproj import MLProject

    return MLProject.from_run(_run).train()


@ex.command
def test(_run, checkpoint):
    """Evaluate a checkpoint on the test set: .venv/bin/python main.py test with checkpoint=runs/3/best.pt"""
    from mlproj import MLProject

    return test_checkpoint(_run, checkpoint, MLProject)


@ex.command(unobserved=True)  # it writes a CSV, not a run
def predict(checkpoint, input, output, top_k, device):
    """Label images: .venv/bin/python main.py predict with checkpoint=runs/3/best.pt input=<image or folder> [output=FILE.csv]"""
    from mlproj.train.predict import image_files, load_for_prediction, predict_files, write_csv

    paths = image_files(input)  # checked before the command started: a checkpoint and images were given
    model, inputs = load_for_prediction(checkpoint, device)  # a Project of your own: get_model=Project.get_model
    rows = predict_files(model, inputs, paths, top_k)
    folder = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint)
    output = output or os.path.join(folder, "predictions.csv")
    write_csv(rows, output)
    print(f"wrote {len(rows)} predictions to {output}")


if __name__ == "__main__":
    ex.run_commandline()
