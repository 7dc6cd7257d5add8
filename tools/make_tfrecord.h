/* pstrain make-tfrecord (tools/make_tfrecord.c): converts a data set to
 * sharded TFRecord files of tf.train.Example. */
#ifndef PSTRAIN_TOOLS_MAKE_TFRECORD_H
#define PSTRAIN_TOOLS_MAKE_TFRECORD_H

int cmd_make_tfrecord(int argc, char **argv);

#endif
