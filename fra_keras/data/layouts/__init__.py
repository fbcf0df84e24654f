"""The real data-set layouts, one module per data set with its reader and format writer side by side,
and its TFDS builder in ``<module>_tfds`` beside it (kept apart so that reading or writing a layout
never imports ``tensorflow_datasets``):

================  =====================================  ==========================
module            reader / writer                        TFDS builder
================  =====================================  ==========================
``rafdb``         ``read_rafdb`` / ``write_rafdb``       ``rafdb_tfds.FraRafdb``
``affectnet``     ``read_affectnet`` / ``write_affectnet``  ``affectnet_tfds.FraAffectnet``
``ferplus``       ``read_ferplus`` / ``write_ferplus``   ``ferplus_tfds.FraFerplus``
``fer2013``       ``read_fer2013`` / ``write_fer2013``   ``fer2013_tfds.FraFer2013``
``celeba``        ``read_celeba`` / ``write_celeba``     ``celeba_tfds.FraCeleba``
``w300``          ``read_300w`` / ``write_300w``         ``w300_tfds.Fra300w``
``wflw``          ``read_wflw`` / ``write_wflw``         ``wflw_tfds.FraWflw``
``image_folder``  ``read_image_folder_labels`` / ``write_image_folder``  (none)
================  =====================================  ==========================

Shared parts: `fra_keras.data.records` (the index every reader returns, its schema and errors),
`fra_keras.data.labels` (every label vocabulary), `writing` (what the writers share) and `tfds_base`
(what the builders share).  Users import the gathered names from `fra_keras.data.readers`,
`fra_keras.data.writers` and `fra_keras.data.tfds_builders`.
"""
