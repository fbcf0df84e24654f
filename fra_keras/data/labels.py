"""Every label vocabulary of the FRA data: expression class orders, CelebA attribute and landmark
names, WFLW attribute flags, the WFLW-98 -> 300W-68 landmark index map, and the RAF-DB -> other
data set class maps.

One module owns them so that the readers, the writers, the TFDS builders and the synthetic renderer
(`fra_keras.data._face_model`) share one list each; it needs nothing but NumPy, so importing it stays
cheap.  Landmark coordinates follow the convention in `fra_keras.data.records` (pixel-index x, y).
"""

from __future__ import annotations

import numpy as np

# --------------------------------------------------------------------------------------------------
# Expression classes
# --------------------------------------------------------------------------------------------------

#: RAF-DB basic order (labels 1..7 in the file -> 0..6).  The synthetic faces use this order too.
RAFDB_CLASSES = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
#: AffectNet's expression codes 0..7 (8 none, 9 uncertain, 10 non-face are dropped).
AFFECTNET_CLASSES = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt")
AFFECTNET_DROPPED_CODES = {8: "none", 9: "uncertain", 10: "non_face"}
#: FERPlus emotion classes (the first 8 vote columns of label.csv).
FERPLUS_CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
#: All 10 FERPlus vote columns.
FERPLUS_VOTE_COLUMNS = FERPLUS_CLASSES + ("unknown", "not_face")
#: FER2013 ``emotion`` column 0..6.
FER2013_CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
#: Class order used with ``label_order="rafdb"``: RAF-DB's 7 classes, then contempt as 7.
RAFDB_ORDER_WITH_CONTEMPT = RAFDB_CLASSES + ("contempt",)


def _rafdb_to(native_names) -> np.ndarray:
    """RAF-DB index -> index in another data set's class list (by name)."""
    return np.array([list(native_names).index(n) for n in RAFDB_CLASSES], np.int64)


RAFDB_TO_AFFECTNET = _rafdb_to(AFFECTNET_CLASSES)
RAFDB_TO_FERPLUS = _rafdb_to(FERPLUS_CLASSES)
RAFDB_TO_FER2013 = _rafdb_to(FER2013_CLASSES)

# --------------------------------------------------------------------------------------------------
# CelebA
# --------------------------------------------------------------------------------------------------

#: The 40 CelebA attributes in ``list_attr_celeba.txt`` column order.
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin",
    "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
    "Wearing_Necktie", "Young",
)
#: CelebA's 5 aligned landmarks, in ``list_landmarks_align_celeba.txt`` order.
CELEBA_LANDMARK_NAMES = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")

# --------------------------------------------------------------------------------------------------
# WFLW
# --------------------------------------------------------------------------------------------------

#: WFLW attribute flags, in list-file order.
WFLW_ATTRIBUTES = ("pose", "expression", "illumination", "make_up", "occlusion", "blur")

#: Standard WFLW-98 -> iBUG/300W-68 mapping: ``lm68 = lm98[WFLW98_TO_68]``.  Contour: every second of
#: WFLW's 33 points; brows: the 5 upper-edge points of each brow; nose: all 9; eyes: the 2 corners and
#: the 2 lid points nearest the 300W positions (WFLW 60,61,63,64,65,67 / 68,69,71,72,73,75); mouth: all
#: 20.  WFLW's extra points (odd contour points, lower brow edges, lid midpoints, pupils 96/97) are
#: dropped.  This lets the 68-point NME code (inter-ocular 36/45) run on WFLW.
WFLW98_TO_68 = np.array(
    list(range(0, 33, 2))                     # 0-16 jaw
    + [33, 34, 35, 36, 37]                    # 17-21 right brow (image left)
    + [42, 43, 44, 45, 46]                    # 22-26 left brow
    + list(range(51, 60))                     # 27-35 nose
    + [60, 61, 63, 64, 65, 67]                # 36-41 right eye
    + [68, 69, 71, 72, 73, 75]                # 42-47 left eye
    + list(range(76, 96)),                    # 48-67 mouth
    dtype=np.int64,
)
