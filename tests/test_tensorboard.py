"""What a run writes for TensorBoard besides scalars, read back with TensorBoard's own
event reader: the first training batch after augmentation, and at each evaluation the
confusion matrix as a picture and as a table of counts."""

import glob
import io

import numpy as np
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from efficientnet_jax.data import digits
from efficientnet_jax.training import confusion_matrix, metrics_log, trainer


def read_events(workdir):
  [path] = glob.glob(f"{workdir}/events.out.tfevents.*")
  events = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
  events.Reload()
  return {tag: events.Tensors(tag) for tag in events.Tags()["tensors"]}


def decoded_images(event):
  """The PNGs of an image summary (its tensor is [width, height, png, png, ...])."""
  encoded = tensor_util.make_ndarray(event.tensor_proto)[2:]
  return [np.asarray(Image.open(io.BytesIO(png))) for png in encoded]


def parse_markdown(table):
  return np.array([[int(x) for x in row.strip("|").split("|")[1:]]
                   for row in table.splitlines()[2:]])


def test_events_hold_training_images_and_the_confusion_matrix(tiny_run):
  workdir = tiny_run(8)
  tensors = read_events(workdir)

  [first_batch] = tensors["train/augmented_images"]
  assert first_batch.step == 1
  images = decoded_images(first_batch)
  assert len(images) == trainer.NUM_LOGGED_IMAGES
  assert all(image.shape == (32, 32, 3) for image in images)
  assert len({image.tobytes() for image in images}) > 1  # a batch, not one image repeated

  # The last (only) evaluation: the table's counts are the run's, and the picture is the
  # rendering of those counts.
  [final] = [r for r in metrics_log.read(workdir) if "eval_top1" in r]
  [table_event] = tensors["eval/confusion_counts"]
  counts = parse_markdown(
      tensor_util.make_ndarray(table_event.tensor_proto).item().decode())
  assert table_event.step == final["step"] == 8
  assert counts.shape == (10, 10)
  assert counts.sum() == final["eval_num_examples"] == 360
  assert np.trace(counts) == round(final["eval_top1"] * 360)
  test_labels = [example["label"] for _, example in digits.split_examples(range(10))["test"]]
  np.testing.assert_array_equal(counts.sum(axis=1), np.bincount(test_labels, minlength=10))

  [picture_event] = tensors["eval/confusion_matrix"]
  assert picture_event.step == 8
  [picture] = decoded_images(picture_event)
  np.testing.assert_array_equal(picture, confusion_matrix.image(counts))


def test_confusion_matrix_table_and_picture():
  counts = np.array([[5, 1, 0], [0, 3, 2], [0, 0, 4]])
  table = confusion_matrix.markdown(counts)
  assert table.splitlines()[0] == "| true \\ predicted | 0 | 1 | 2 |"
  np.testing.assert_array_equal(parse_markdown(table), counts)
  picture = confusion_matrix.image(counts)
  assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
  assert not np.array_equal(picture, confusion_matrix.image(counts.T))
