"""Golden output of the synthetic generator: the same arguments write the same bytes.

``GOLDEN`` holds the SHA-256 of every file (frames, ``train.json``, ``val.json`` and a
``save_preview`` contact sheet) that generator version ``GENERATOR_VERSION`` ("1.1", pinned in
``PINNED_VERSION``) writes for a few small datasets: both presets, ``two_classes``, and two busier
ones that between them reach every degradation type of both presets. They guard refactors of
``v2idetr.data.synthetic``: a move, split or speed-up must leave every digest as it is.

A deliberate change to what the generator writes (an algorithm, a constant, the order of random
draws, the formatting of a written file) must bump ``GENERATOR_VERSION`` (datasets written before
and after it differ) and then update ``PINNED_VERSION`` and these digests together: print the new
ones with ``_digests`` over each case's output.

The frames and the preview are PNGs: their bytes also depend on Pillow's and zlib's encoders, so a
new version of either may change digests that the generator did not.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from v2idetr.data.synthetic import GENERATOR_VERSION, generate, save_preview

PINNED_VERSION = "1.1"

_SMALL = {"videos": 3, "frames": 5, "size": 48, "seed": 7, "val_fraction": 0.34}
_BUSY = {"videos": 3, "frames": 6, "size": 48, "seed": 8, "val_fraction": 0.34}
CASES = {
    "ultrasound": {**_SMALL, "preset": "ultrasound"},
    "colonoscopy": {**_SMALL, "preset": "colonoscopy"},
    "ultrasound_two_classes": {**_SMALL, "preset": "ultrasound", "two_classes": True},
    # every degradation type: all 8 here; colonoscopy's occlusion is in the "colonoscopy" case
    "ultrasound_every_degradation": {**_BUSY, "preset": "ultrasound", "degradation_rate": 0.5},
    "colonoscopy_every_degradation": {**_BUSY, "preset": "colonoscopy", "degradation_rate": 0.7},
}

GOLDEN = {
    "ultrasound": {
        "frames/ultrasound_0000/000000.png": "bdcbf2c0c420ba57d5e03ac7dbebd6c252caa2bb7fd9d077e1695815711d9f53",
        "frames/ultrasound_0000/000001.png": "69cf899544df57395bb1656f2665b9d3d3ee261f62efca72a8215c6570e95227",
        "frames/ultrasound_0000/000002.png": "fe66a7ebf1ee751406854c2fd14e9a5bed89ffca0af2f41c91592ad048adceab",
        "frames/ultrasound_0000/000003.png": "1a8fcdef699546c2bb04c77c80739223c722046e2085d36041fe60111e6a4690",
        "frames/ultrasound_0000/000004.png": "e21c624b2c97722260f0d3a0ab53d61459ae06c29392882702bc339a7ac13e51",
        "frames/ultrasound_0001/000000.png": "f4ec954c2d29934a93f2930f967002211adc9a158ff385bbb1b7a17e3716853b",
        "frames/ultrasound_0001/000001.png": "779cc4c22b4661b24d864a39ad2c7d0aad90076a7c42f432896b9d9db24a1def",
        "frames/ultrasound_0001/000002.png": "6a4888b65b512a12ff3963486e713b87bea878b4ef837dc6934b691e02e8e985",
        "frames/ultrasound_0001/000003.png": "156ef9c0491e6c26594098cd88d26d99df82d72cf3a4e4544cbd8cfb863d4b74",
        "frames/ultrasound_0001/000004.png": "e9f54a1db630fb6634032d871db33af45fe29c1a27959edc5357d8220b04da48",
        "frames/ultrasound_0002/000000.png": "8610de8a84a34c51e920d16c669a8b9944795fe7ce0dceb2ca4a920fb5d9d912",
        "frames/ultrasound_0002/000001.png": "c7f92a96053b8cd772192fb8d9a6076abe49eda9960480df6993466e3a4ec9cf",
        "frames/ultrasound_0002/000002.png": "333ad4bd337d7caa55337bea4a2ccfbafaa4e683a64c2d2883c9ba777e61e7e5",
        "frames/ultrasound_0002/000003.png": "da22b072db6f24e6edca6b6f53b88b0d085c1529505e23c2e1e97f956c579fbd",
        "frames/ultrasound_0002/000004.png": "98d4b8c5e0d5281c99e41d7384c496ac02dff3a41196eebba6c78c8610ab6f3c",
        "preview.png": "0a621d15835dbbdc0c071670a90d5b0a898f6cb6b5b09e29840cf602e1775248",
        "train.json": "abc5043c730f8f5e8a7c0133f8b7502fd3bb452cff532f4734d6ca20d7bbb5b3",
        "val.json": "5b5c8bc231cbba89da4438c9740aa51fc6fcbb6d1cb79a96e5687092a703883e",
    },
    "colonoscopy": {
        "frames/colonoscopy_0000/000000.png": "0289f5bf141453b2f41c6b8e512fe0ffdd5ae468420c988113fb137876c925a5",
        "frames/colonoscopy_0000/000001.png": "b90065fd2eba522ab55b312538bc0b0a650a7c14674c9f12b796b70b0a9b0b70",
        "frames/colonoscopy_0000/000002.png": "0d6f2b45a030d9d8f0edc01bf7680230e6997e99d4f7c6c606d9f3fada4e35c4",
        "frames/colonoscopy_0000/000003.png": "ace2a78688c8432cde769c3f3ff352aba161b103e9a11fb178067a380543832c",
        "frames/colonoscopy_0000/000004.png": "b483e8c4d1441db60b0557a679aaea6e5207491da507e717b12a747c4f353b5e",
        "frames/colonoscopy_0001/000000.png": "90d93a721ae341c3233563b56dfdb54c4ac52931c65a68d53204991ad4a8368a",
        "frames/colonoscopy_0001/000001.png": "f21d657c01b200ccc4c93823cee9720b8925e7298faeeb268761903961d65cf1",
        "frames/colonoscopy_0001/000002.png": "7a631d94a0d195045437b180318f55697be6e8858323a36f579087baaf73a2ba",
        "frames/colonoscopy_0001/000003.png": "17657fd8f3ed25529665cb7019a5016ff3b81ff1f07dbbb3430e7b54ca16d99c",
        "frames/colonoscopy_0001/000004.png": "d7270055ceffa1f904a0e858923c2c88f78710fa8136ead788fe24160e22b463",
        "frames/colonoscopy_0002/000000.png": "805564504b895501faf0dccb951ca93beeb7c7f1465624a862a1ba806594e005",
        "frames/colonoscopy_0002/000001.png": "15ef191af2a815b1d0380fd2aaa440af979b058a3397c7552a707393b7b8a09e",
        "frames/colonoscopy_0002/000002.png": "d2a5d086521810017177855dbfe72483532047211818acabcbd6eb4965b581ba",
        "frames/colonoscopy_0002/000003.png": "e3944f7cfc0f6207bc015dd2de6c6305853f16bfc11e4af71ec8539dca079023",
        "frames/colonoscopy_0002/000004.png": "b85e04db8593b0b73f3d4b5dbaacc64370ab4ccbb4cfe0c42958ae12cc9100fc",
        "preview.png": "719a2716110755272732b8baab127e4196bd763f65d97f577d63fff79d847fb2",
        "train.json": "d6bb1ae860d8d7081d9b79c7a7a9bef1519d17af65c1370803878361f07e3fdf",
        "val.json": "4db0c8164d39611bde767e2eec6141e2bcae6452dc9117c6def5f82042f5b88c",
    },
    "ultrasound_every_degradation": {
        "frames/ultrasound_0000/000000.png": "9016cad425f9aa4a537a91e289379052e43718e686b92da648c1b757b31391c3",
        "frames/ultrasound_0000/000001.png": "61a157cf638e837f46a48a06577c3129be91fcc5644d24823d59de470b773f96",
        "frames/ultrasound_0000/000002.png": "b9d7722a505169602254e1883992c607bb87a96aec0a58d3566d8bc35741ae7a",
        "frames/ultrasound_0000/000003.png": "354e82f6bd60c4b101d1f85c1c7b2ec2deb7d9a21d2c2101ed8cc828cb64d154",
        "frames/ultrasound_0000/000004.png": "45a56aab10a5aba3393328ed9a383726deb316c25c500cd216dd66defd183189",
        "frames/ultrasound_0000/000005.png": "591e983928e4fe011d83cec5704f1e7acb52ec6789af1a369d28f33fbda140a3",
        "frames/ultrasound_0001/000000.png": "6a4c6659a9d72b4caa322842096fd3ccd664c8e1de9bb9e4c50574640a016fbd",
        "frames/ultrasound_0001/000001.png": "4fed58b387dbf970ec7f9d0831088199c336ce5b6dbf9aae002f2510d82fbcf5",
        "frames/ultrasound_0001/000002.png": "017ccb9e82cfc3f61f696e4f592962fc345be4a4bcb1a25584b6803cb18922cd",
        "frames/ultrasound_0001/000003.png": "5b1d98c22d1d6d3af2b7bdb360093924a3d51ef98d8e710e1b41ab49a0f42500",
        "frames/ultrasound_0001/000004.png": "061589c2191d6b470d3abe126cf9a23babde28244e50ca8673d1e7b3a2c8a4fa",
        "frames/ultrasound_0001/000005.png": "86e0f24a572829c69df9c30e723a569e02f4d6e9ce49f3337dbf74a9428a1b2e",
        "frames/ultrasound_0002/000000.png": "52352757a2c0eb0b95c17636a06c29eb99ca20e7a484dc024fd1136cabbc52d0",
        "frames/ultrasound_0002/000001.png": "2c6d6179630f1f11dd3077d2bc5ad227142cb397b8191ae901c8576ffd2ec552",
        "frames/ultrasound_0002/000002.png": "3c782155f566f1bd3a222103ccf2d5c324eef8caeea6cb4c28c1c51411bd6eed",
        "frames/ultrasound_0002/000003.png": "105e76c5d6bef019d30d754dd20adc014f272e489f31b27874d0b7889b3defde",
        "frames/ultrasound_0002/000004.png": "02169d115b22c476ece88ad5520f4569bc51241efea86537f00e49918f43c9d8",
        "frames/ultrasound_0002/000005.png": "715075a400f4b8daddb574528e0ec8b02f56adb4875c13181fb333aa4cfd1051",
        "preview.png": "240f848ef4ef7af95adda991b84c67f2ea5892362b318aabd1364243ae039abe",
        "train.json": "225b66f6db30a5ec02cd0db5f59291e36d5d8f235fd6b1b048a60d318e2c3c18",
        "val.json": "6c31dfcc20c288e60334897441c481f460d87b2cc1549d5203eb21a334da2806",
    },
    "colonoscopy_every_degradation": {
        "frames/colonoscopy_0000/000000.png": "7efc3b844b393d791bc5b487c1529ab661613c0d793261de8794753ed2e9e76e",
        "frames/colonoscopy_0000/000001.png": "7de07b75a6bccd10019785569c5b9ee93e32cc380d4e30532af310ae78aa0179",
        "frames/colonoscopy_0000/000002.png": "e115f0bee236a00b3c8b0b9054e8bbce8b1272863c0a3f245f5a01be7b801871",
        "frames/colonoscopy_0000/000003.png": "8004d9d7c5772065985998a1783988401a73921d5f08b432514a0bcf6730b105",
        "frames/colonoscopy_0000/000004.png": "18862f8dc241985aeefb86e61ed3dd2f9e8bd40569de0685e487c38ea77956a5",
        "frames/colonoscopy_0000/000005.png": "6e83e94e9e148fb86c89972f73e7408a15ee3851e041a6fd9bcfb85fdba03b99",
        "frames/colonoscopy_0001/000000.png": "b07776f63e118a8ade560d3c5eb954e7e3880d76df5ed25ee09301d4bd78e785",
        "frames/colonoscopy_0001/000001.png": "2b30413a99fcb7d1649d1f7cd6b0e2d8e940c55992f54b9aef9188fe64bc5c2f",
        "frames/colonoscopy_0001/000002.png": "b90f16d3807c9dfed539f417aea4f88f5003cd9214500f640effb9663d18fcae",
        "frames/colonoscopy_0001/000003.png": "efee5f809187155861336102c412916776243910ce84f0c22a92b873e0a13c17",
        "frames/colonoscopy_0001/000004.png": "3a7509850e4d0106e5a2f674f145a1b2c6eac52cc78a4a0e3744309a93cf0e17",
        "frames/colonoscopy_0001/000005.png": "ef66e4f7eac947e252dcede1117a2761376751d4f91ae8507756fea201aa98ba",
        "frames/colonoscopy_0002/000000.png": "e44d12c5cea8e5f23e4f46789e63e6bb3f9c94051c846dde5ce3d68552a7e506",
        "frames/colonoscopy_0002/000001.png": "0dced91b7dab8893eb9e2f60234716d9f2a8ae604bb7d486c1d3c9c6e32e916f",
        "frames/colonoscopy_0002/000002.png": "d70811bd270c850272141b557544e4025cb0f240fc28b0ee363b8ef4d0bab551",
        "frames/colonoscopy_0002/000003.png": "209d947da4c4b9b0bbbd8770497b4a4ac251936dd4ec419f63d9253b5d64b2c2",
        "frames/colonoscopy_0002/000004.png": "8d0ea3eb0c49e2154707add6984ca160e9829b88cf9335bc65c001441df5b823",
        "frames/colonoscopy_0002/000005.png": "110e6fe7bc15a46548b3212ecf13ba847bf7f51f7272e6d9913950cd95695f64",
        "preview.png": "f76c007797db47bc35e1eeb42412a7fd005cbd50ff3b73d9ca5ae8fcf2ebb172",
        "train.json": "686fdb1113dc918ee712154408f62713d07fc6892e886e171f451fdea9cd7b49",
        "val.json": "4e689f8a265c6db01d9ed7f2e046b293ce1da5c576f1a4deb0837a115b3b8c95",
    },
}

# ``two_classes`` changes the categories (and the preview's box colours), not a single pixel of a frame.
GOLDEN["ultrasound_two_classes"] = {
    **GOLDEN["ultrasound"],
    "preview.png": "39223c20143a713ccd103f7fefe0d9f070fddfa971ed0dc5588ef8b7ca547025",
    "train.json": "1bc0c26279e3a91093b5317fa881b2c70b5e401c216f19d88f1502f3dc108784",
    "val.json": "77641ea1d5a7dbf9becc2b0960e944e9e308923d39e236fcd87d674fbf298df5",
}


def _digests(root: Path) -> dict[str, str]:
    """Relative path (POSIX) -> SHA-256 hex digest of the bytes, for every file below ``root``."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_the_digests_pin_the_current_generator_version() -> None:
    assert GENERATOR_VERSION == PINNED_VERSION, (
        "GENERATOR_VERSION changed: regenerate GOLDEN for the new version and update PINNED_VERSION"
    )


@pytest.mark.parametrize("case", list(CASES))
def test_generator_writes_the_golden_bytes(tmp_path: Path, case: str) -> None:
    out = tmp_path / case
    result = generate(out, **CASES[case])
    save_preview(result.train_json, out / "preview.png", max_frames=8)
    got, want = _digests(out), GOLDEN[case]
    assert sorted(got) == sorted(want), "a different set of files was written"
    changed = sorted(name for name in want if got[name] != want[name])
    assert not changed, f"{len(changed)} of {len(want)} files differ from the golden output: {changed}"
