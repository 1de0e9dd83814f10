"""imgproxy URLs (pixq.imgproxy): signatures, the two source forms, options -> pixq spec, the
canonical string, and the IMG_* settings. Pure logic, so unit tests; the /img route's own
tests (HTTP, cache, jobs) live with the route.

Signatures are checked against values computed independently of pixq: imgproxy's documented
examples (its docs' signing guide and its examples/ folder) and Python's hmac written out here.
"""

import base64
import hashlib
import hmac
import json
import time
import urllib.parse

import pytest

from pixq.errors import ErrorCode, PixqError
from pixq.imgproxy import Signing, parse_image_path, parse_presets
from pixq.settings import load_settings

pytestmark = pytest.mark.timeout(30)

# imgproxy's examples/ (signature.java asserts the result for this key, salt and path)
DOC_KEY = "943b421c9eb07c830af81030552c86009268de4e532ba2ee2eab8247c6da0881"
DOC_SALT = "520f986b998545b4785e0defbc4f3c1203f22de2374a3d53cb7a7fe9fea309c5"
DOC_PATH = "/rs:fit:300:300/plain/http://img.example.com/pretty/image.jpg"
DOC_SIGNATURE = "m3k5QADfcKPDj-SDI2AIogZbC3FlAXszuwhtWXYqavc"
# imgproxy's docs/signing_the_url.md: key "secret", salt "hello"
GUIDE_KEY, GUIDE_SALT = "736563726574", "68656C6C6F"
GUIDE_PATH = "/fill/300/400/sm/0/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png"
GUIDE_SIGNATURE = "AfrOrF3gWeDA6VOlDG4TzxMv39O7MXnF4CXpKUwGqRM"

OPEN = Signing(allow_unsigned=True)
SOURCE = "/plain/s3://pixq/photos/cat.jpg"


def reference_signature(key_hex: str, salt_hex: str, path: str, size: int = 32) -> str:
    """imgproxy's algorithm written out independently of pixq.imgproxy."""
    digest = hmac.new(bytes.fromhex(key_hex), bytes.fromhex(salt_hex) + path.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:size]).decode().rstrip("=")


def signing(*pairs: tuple[str, str], size: int = 32) -> Signing:
    return Signing(pairs=tuple((bytes.fromhex(k), bytes.fromhex(s)) for k, s in pairs), size=size)


def refused(path: str, code: ErrorCode, sign: Signing = OPEN, presets: dict[str, str] | None = None) -> str:
    with pytest.raises(PixqError) as info:
        parse_image_path(path, sign, presets)
    assert info.value.code is code, info.value.message
    return info.value.message


def spec_of(options: str, source: str = SOURCE, presets: dict[str, str] | None = None) -> dict:
    """The compiled spec of ``/insecure/{options}{source}`` as JSON (defaults filled)."""
    path = f"/insecure/{options}{source}" if options else f"/insecure{source}"
    return parse_image_path(path, OPEN, presets).spec.model_dump(mode="json")


def canonical(options: str, presets: dict[str, str] | None = None, source: str = SOURCE) -> str:
    path = f"/insecure/{options}{source}" if options else f"/insecure{source}"
    return parse_image_path(path, OPEN, presets).canonical


# --- Signatures ------------------------------------------------------------------------------


def test_documented_signatures():
    assert reference_signature(DOC_KEY, DOC_SALT, DOC_PATH) == DOC_SIGNATURE  # the reference itself is right
    assert signing((DOC_KEY, DOC_SALT)).sign(DOC_PATH) == DOC_SIGNATURE
    assert signing((GUIDE_KEY, GUIDE_SALT)).sign(GUIDE_PATH) == GUIDE_SIGNATURE
    url = parse_image_path(f"/{DOC_SIGNATURE}{DOC_PATH}", signing((DOC_KEY, DOC_SALT)))
    assert url.source == "http://img.example.com/pretty/image.jpg"
    assert url.spec.variants[0].width == 300 and url.spec.variants[0].fit == "inside"


def test_guide_url_in_the_current_format_is_accepted():
    path = "/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png"
    url = parse_image_path(f"/{reference_signature(GUIDE_KEY, GUIDE_SALT, path)}{path}",
                           signing((GUIDE_KEY, GUIDE_SALT)))
    assert url.source == "http://example.com/images/curiosity.jpg"
    variant = url.spec.variants[0]
    assert (variant.width, variant.height, variant.fit, variant.gravity, variant.enlarge, variant.format) == (
        300, 400, "cover", "attention", False, "png")
    assert url.format_given


@pytest.mark.parametrize("size", [1, 8, 16, 31, 32])
def test_truncated_signatures(size):
    key, salt = "ab" * 16, "cd" * 16
    path = "/w:200/plain/local://a/b.png"
    expected = reference_signature(key, salt, path, size)
    assert signing((key, salt), size=size).sign(path) == expected
    parse_image_path(f"/{expected}{path}", signing((key, salt), size=size))
    if size != 32:  # a full-length signature is not the truncated one
        refused(f"/{reference_signature(key, salt, path)}{path}", ErrorCode.SIGNATURE_INVALID,
                signing((key, salt), size=size))


def test_every_configured_pair_is_accepted_and_no_other():
    old, new, stranger = ("01" * 32, "02" * 32), ("03" * 32, "04" * 32), ("05" * 32, "06" * 32)
    rotating = signing(new, old)
    path = "/w:100/plain/s3://pixq/in.jpg"
    for pair in (old, new):
        parse_image_path(f"/{reference_signature(*pair, path)}{path}", rotating)
    assert rotating.sign(path) == reference_signature(*new, path)  # the first pair signs
    message = refused(f"/{reference_signature(*stranger, path)}{path}", ErrorCode.SIGNATURE_INVALID, rotating)
    assert "signature" in message
    error = PixqError(ErrorCode.SIGNATURE_INVALID, "x")
    assert error.http_status == 403


def test_signature_covers_the_path_as_sent():
    pair = ("0a" * 32, "0b" * 32)
    sign = signing(pair)
    encoded = "/w:50/plain/s3://pixq/a%20b%40c.jpg@webp"
    url = parse_image_path(f"/{reference_signature(*pair, encoded)}{encoded}", sign)
    assert url.source == "s3://pixq/a b@c.jpg" and url.spec.variants[0].format == "webp"
    # signed over the decoded form instead: not what a builder signs, refused
    decoded = "/w:50/plain/s3://pixq/a b@c.jpg@webp"
    refused(f"/{reference_signature(*pair, decoded)}{encoded}", ErrorCode.SIGNATURE_INVALID, sign)
    # any change of the options, source or extension breaks it
    good = reference_signature(*pair, encoded)
    for tampered in (encoded.replace("w:50", "w:51"), encoded.replace("a%20b", "a%20c"), encoded.replace("webp", "png")):
        refused(f"/{good}{tampered}", ErrorCode.SIGNATURE_INVALID, sign)
    refused(f"/{good[:-1]}{encoded}", ErrorCode.SIGNATURE_INVALID, sign)
    refused(f"/{encoded}", ErrorCode.SIGNATURE_INVALID, sign)  # no signature segment at all


@pytest.mark.parametrize("source", ["https://images.example.com/x.jpg", "s3://pixq/in/x.jpg", "local://in/x.jpg"])
def test_a_proxy_collapsing_the_double_slash_keeps_the_signature_valid(source):
    pair = ("0c" * 32, "0d" * 32)
    path = f"/w:80/plain/{source}@png"
    collapsed = path.replace("://", ":/")
    for sent in (path, collapsed):
        url = parse_image_path(f"/{reference_signature(*pair, path)}{sent}", signing(pair))
        assert url.source == source


def test_only_the_scheme_is_repaired():
    pair = ("0c" * 32, "0d" * 32)
    path = "/w:80/plain/https://images.example.com/a:/b/plain/c:/d.jpg"  # ":/" later in the path stays as sent
    url = parse_image_path(f"/{reference_signature(*pair, path)}{path}", signing(pair))
    assert url.source == "https://images.example.com/a:/b/plain/c:/d.jpg"


def test_unsigned_urls_only_when_allowed():
    refused("/insecure/w:10/plain/s3://pixq/a.jpg", ErrorCode.SIGNATURE_INVALID, Signing())
    assert not Signing().enabled and OPEN.enabled and signing(("00", "00")).enabled
    for anything in ("insecure", "_", "unsafe"):
        assert parse_image_path(f"/{anything}/w:10/plain/s3://pixq/a.jpg", OPEN).source == "s3://pixq/a.jpg"


def test_signing_from_settings():
    settings = load_settings(img_key=f"{DOC_KEY},{GUIDE_KEY}", img_salt=f"{DOC_SALT},{GUIDE_SALT}",
                             img_signature_size=8)
    sign = Signing.from_settings(settings)
    assert sign.size == 8 and len(sign.pairs) == 2
    assert sign.sign(DOC_PATH) == reference_signature(DOC_KEY, DOC_SALT, DOC_PATH, 8)
    guide = "/w:1/plain/local://k"
    parse_image_path(f"/{reference_signature(GUIDE_KEY, GUIDE_SALT, guide, 8)}{guide}", sign)


# --- Sources ---------------------------------------------------------------------------------


def test_plain_and_base64_sources():
    source = "https://cdn.example.com/a/b c.jpg?v=1"
    plain = urllib.parse.quote(source, safe="")
    encoded = base64.urlsafe_b64encode(source.encode()).decode().rstrip("=")
    split = "/".join(encoded[i:i + 7] for i in range(0, len(encoded), 7))
    padded = base64.urlsafe_b64encode(source.encode()).decode()
    for tail, fmt in ((f"/plain/{plain}", None), (f"/plain/{plain}@png", "png"), (f"/{encoded}", None),
                      (f"/{split}.webp", "webp"), (f"/{padded}.jpg", "jpeg")):
        url = parse_image_path(f"/insecure/w:10{tail}", OPEN)
        assert url.source == source, tail
        assert url.format_given is (fmt is not None)
        assert url.spec.variants[0].format == (fmt or "same")


@pytest.mark.parametrize("source", ["s3://pixq/in/cat.jpg", "local://in/cat.jpg", "http://example.com/a.png",
                                    "https://example.com/a.png"])
def test_source_schemes(source):
    assert parse_image_path(f"/insecure/plain/{source}", OPEN).source == source
    encoded = base64.urlsafe_b64encode(source.encode()).decode().rstrip("=")
    assert parse_image_path(f"/insecure/{encoded}", OPEN).source == source


@pytest.mark.parametrize("tail", [
    "/plain/ftp://example.com/a.jpg",         # scheme pixq does not read
    "/plain/s3://bucket-only",                # s3 without a key
    "/plain/local://",                        # names nothing
    "/plain/example.com/a.jpg",               # no scheme
    "/plain/s3://pixq/a.jpg@png@webp",        # two extensions
    "/plain/s3://pixq/a%zz.jpg",              # malformed %-escape
    "/plain/s3://pixq/a%ff.jpg",              # not UTF-8
    "/plain/s3://pixq/a%0a.jpg",              # control character
    "/aHR0c*Hs.png",                          # not base64
    "/aHR0cHM6Ly9h.png.jpg",                  # two extensions
    "",                                       # no source
])
def test_malformed_sources_are_400(tail):
    message = refused(f"/insecure/w:10{tail}", ErrorCode.INVALID_REQUEST)
    assert message
    assert PixqError(ErrorCode.INVALID_REQUEST, "x").http_status == 400


def test_overlong_source_is_400():
    refused(f"/insecure/plain/s3://pixq/{'a' * 2100}.jpg", ErrorCode.INVALID_REQUEST)


def test_no_signature_segment_or_raw_unicode_is_400():
    refused("/insecure", ErrorCode.INVALID_REQUEST)
    refused("insecure/w:1/plain/s3://pixq/a.jpg", ErrorCode.INVALID_REQUEST)
    refused("/insecure/w:1/plain/s3://pixq/caf\u00e9.jpg", ErrorCode.INVALID_REQUEST)
    assert parse_image_path("/insecure/w:1/plain/s3://pixq/caf%C3%A9.jpg", OPEN).source == "s3://pixq/caf\u00e9.jpg"


def test_huge_numbers_are_422_not_500():
    for options in (f"w:{'9' * 5000}", f"exp:{'9' * 5000}", "bl:1e400", "c:1e400:10"):
        refused(f"/insecure/{options}/plain/s3://pixq/a.jpg", ErrorCode.INVALID_PARAMETERS)


# --- Options -> spec -------------------------------------------------------------------------


@pytest.mark.parametrize(("resizing_type", "fit", "enlarge"), [
    ("fit", "inside", True), ("fill", "cover", True), ("fill-down", "cover", False), ("force", "fill", True),
])
def test_resizing_types(resizing_type, fit, enlarge):
    variant = spec_of(f"rs:{resizing_type}:300:200:1")["variants"][0]
    assert (variant["width"], variant["height"], variant["fit"], variant["enlarge"]) == (300, 200, fit, enlarge)
    assert spec_of(f"rt:{resizing_type}/w:300/h:200/el:t")["variants"][0] == variant


def test_auto_resizing_type():
    # one side: fit and fill give the same image, so auto is exact
    assert spec_of("rs:auto:300")["variants"][0]["fit"] == "inside"
    message = refused("/insecure/rs:auto:300:200/plain/s3://pixq/a.jpg", ErrorCode.INVALID_PARAMETERS)
    assert "auto" in message and "orientation" in message


def test_one_side_and_no_size():
    assert spec_of("h:120") == spec_of("s:0:120") == spec_of("rs::0:120")
    variant = spec_of("h:120")["variants"][0]
    assert (variant["width"], variant["height"]) == (None, 120)
    # force with one side stretches that side only (imgproxy keeps the other: pixq's fill does too)
    assert spec_of("rs:force:0:120")["variants"][0]["fit"] == "fill"
    # no size at all: no resize, whatever the type
    for options in ("", "rs:fill", "rs:force:0:0:1", "el:1/g:sm"):
        variant = spec_of(options)["variants"][0]
        assert variant["width"] is None and variant["height"] is None, options
        assert spec_of(options)["steps"] == []


@pytest.mark.parametrize(("imgproxy", "pixq"), [
    ("no", "north"), ("so", "south"), ("ea", "east"), ("we", "west"), ("noea", "northeast"), ("nowe", "northwest"),
    ("soea", "southeast"), ("sowe", "southwest"), ("ce", "centre"), ("sm", "attention"),
])
def test_gravities(imgproxy, pixq):
    assert spec_of(f"rs:fill:100:100/g:{imgproxy}")["variants"][0]["gravity"] == pixq
    assert spec_of(f"c:50:40:{imgproxy}")["steps"] == [
        {"op": "crop", "x": None, "y": None, "width": 50, "height": 40, "gravity": pixq}]


@pytest.mark.parametrize("options", ["g:fp:0.5:0.5", "g:obj:face", "g:xx", "g:no:10:0", "g:ce:0.2", "g:sm:1",
                                     "g:no:0:0:0", "ex:1:sm", "c:10:10:fp:0.1:0.1"])
def test_gravities_pixq_cannot_place_are_refused(options):
    message = refused(f"/insecure/rs:fill:10:10/{options}/plain/s3://pixq/a.jpg", ErrorCode.INVALID_PARAMETERS)
    assert "gravity" in message or "extend" in message or "crop" in message
    # zero offsets mean no offset: accepted
    assert spec_of("rs:fill:10:10/g:no:0:0")["variants"][0]["gravity"] == "north"


def test_crop_before_resize_and_its_gravity():
    spec = spec_of("c:600:400/g:soea/rs:fill:300:200/rot:90")
    # imgproxy rotates first (crop sizes refer to the rotated image), crops, then resizes
    assert spec["steps"] == [{"op": "rotate", "angle": 90},
                             {"op": "crop", "x": None, "y": None, "width": 600, "height": 400, "gravity": "southeast"}]
    assert spec["variants"][0]["fit"] == "cover" and spec["variants"][0]["gravity"] == "southeast"
    # the crop's own gravity wins over g
    assert spec_of("c:600:400:nowe/g:soea")["steps"][0]["gravity"] == "northwest"


@pytest.mark.parametrize("crop", ["c:0.5:0.5", "c:0:100", "c:100", "c:100.5:10", "c:-1:10", "c:20000:10"])
def test_crops_needing_the_source_size_are_refused(crop):
    message = refused(f"/insecure/{crop}/plain/s3://pixq/a.jpg", ErrorCode.INVALID_PARAMETERS)
    assert "crop" in message


@pytest.mark.parametrize(("angle", "expected"), [("90", 90), ("180", 180), ("270", 270), ("360", None), ("0", None),
                                                 ("-90", 270), ("450", 90)])
def test_rotate(angle, expected):
    steps = spec_of(f"rot:{angle}")["steps"]
    assert steps == ([{"op": "rotate", "angle": expected}] if expected else [])


@pytest.mark.parametrize("options", ["rot:45", "rot:x", "rotate:90:1"])
def test_bad_rotations_are_refused(options):
    assert "rotate" in refused(f"/insecure/{options}/plain/s3://pixq/a.jpg", ErrorCode.INVALID_PARAMETERS)


def test_blur_and_sharpen_apply_after_the_resize():
    spec = spec_of("rs:fit:300:200/sh:1.5/bl:2")
    assert spec["steps"] == [
        {"op": "resize", "width": 300, "height": 200, "fit": "inside", "enlarge": False, "gravity": "centre",
         "background": "#ffffff"},
        {"op": "blur", "sigma": 2.0}, {"op": "sharpen", "sigma": 1.5}]  # imgproxy's order: blur, then sharpen
    assert spec["variants"][0]["width"] is None
    assert spec_of("blur:0.3")["steps"] == [{"op": "blur", "sigma": 0.3}]


@pytest.mark.parametrize("options", ["bl:0", "bl:0.2", "bl:101", "bl:x", "bl:nan", "sh:0.2", "sh:11", "sh:-1"])
def test_sigmas_outside_pixq_ranges_are_refused(options):
    message = refused(f"/insecure/{options}/plain/s3://pixq/a.jpg", ErrorCode.INVALID_PARAMETERS)
    assert message.startswith(("blur", "sharpen"))


def test_extend():
    # fit then pad to the box is pixq's contain (bars transparent, or white on JPEG, unless bg)
    variant = spec_of("rs:fit:300:200:0:1:so")["variants"][0]
    assert (variant["fit"], variant["gravity"], variant["enlarge"], variant["background"]) == (
        "contain", "south", False, "#ffffff00")
    assert spec_of("s:300:200/ex:1:so")["variants"][0] == variant
    assert spec_of("s:300:200/ex:t/bg:ff0000/el:1")["variants"][0]["background"] == "#ff0000"
    assert spec_of("s:300:200/ex:t/bg:ff0000/el:1")["variants"][0]["enlarge"] is True
    # fill then pad: a cover step, then the pad (never enlarging)
    spec = spec_of("rs:fill:300:200/ex:1")
    assert spec["steps"][0]["fit"] == "cover"
    assert spec["variants"][0]["fit"] == "contain" and spec["variants"][0]["enlarge"] is False
    # ex:0 is no extend
    assert spec_of("s:300:200/ex:0")["variants"][0]["fit"] == "inside"
    message = refused("/insecure/w:300/ex:1/plain/s3://pixq/a.jpg", ErrorCode.INVALID_PARAMETERS)
    assert "extend" in message


@pytest.mark.parametrize(("options", "colour"), [("bg:ff8800", "#ff8800"), ("bg:F80", "#ff8800"),
                                                 ("bg:255:136:0", "#ff8800"), ("background:000000", "#000000")])
def test_background(options, colour):
    assert spec_of(options)["variants"][0]["background"] == colour
    assert spec_of(f"{options}/bg:")["variants"][0]["background"] == "#ffffff"  # empty resets it


@pytest.mark.parametrize("options", ["bg:ff88", "bg:zzzzzz", "bg:256:0:0", "bg:1:2", "bg:#ffffff"])
def test_bad_backgrounds_are_refused(options):
    assert "background" in refused(f"/insecure/{options}/plain/s3://pixq/a.jpg", ErrorCode.INVALID_PARAMETERS)


def test_quality_and_format():
    assert spec_of("q:55")["variants"][0]["quality"] == 55
    assert spec_of("q:0")["variants"][0]["quality"] == 80  # 0: the default
    for options, fmt in (("f:webp", "webp"), ("format:jpg", "jpeg"), ("ext:tif", "tiff"), ("f:AVIF", "avif")):
        url = parse_image_path(f"/insecure/{options}/plain/s3://pixq/a.jpg", OPEN)
        assert url.spec.variants[0].format == fmt and url.format_given
    # the extension wins over format: (imgproxy applies it last)
    assert parse_image_path("/insecure/f:webp/plain/s3://pixq/a.jpg@png", OPEN).spec.variants[0].format == "png"
    for options in ("q:101", "q:-1", "q:x"):
        assert "quality" in refused(f"/insecure/{options}/plain/s3://pixq/a.jpg", ErrorCode.INVALID_PARAMETERS)
    for tail in ("f:bmp/plain/s3://pixq/a.jpg", "plain/s3://pixq/a.jpg@heic", "plain/s3://pixq/a.jpg@best"):
        message = refused(f"/insecure/{tail}", ErrorCode.INVALID_PARAMETERS)
        assert "does not write" in message


@pytest.mark.parametrize(("options", "named"), [
    ("wm:0.5", "'wm'"), ("pd:10", "'pd'"), ("trim:10", "'trim'"), ("dpr:2", "'dpr'"), ("zz:1", "'zz'"),
    ("resizing_algorithm:linear", "'resizing_algorithm'"),
])
def test_unknown_options_are_refused_by_name(options, named):
    message = refused(f"/insecure/w:10/{options}/plain/s3://pixq/a.jpg", ErrorCode.INVALID_PARAMETERS)
    assert named in message and "unknown option" in message
    assert PixqError(ErrorCode.INVALID_PARAMETERS, "x").http_status == 422


@pytest.mark.parametrize("options", ["w:x", "w:-1", "w:16384", "h:1.5", "el:yes", "rs:cover:10", "rs:fit:1:1:0:0:0:0:0:0",
                                     "s:1:2:3", "ex:maybe", "rt:fit:1", "cb:a:b", "exp:soon"])
def test_malformed_arguments_are_refused(options):
    assert refused(f"/insecure/{options}/plain/s3://pixq/a.jpg", ErrorCode.INVALID_PARAMETERS)


def test_expires():
    future = int(time.time()) + 3600
    assert parse_image_path(f"/insecure/exp:{future}/plain/s3://pixq/a.jpg", OPEN).expires == future
    assert parse_image_path(f"/insecure/expires:{future}/plain/s3://pixq/a.jpg", OPEN).expires == future
    assert parse_image_path("/insecure/exp:0/plain/s3://pixq/a.jpg", OPEN).expires is None
    assert parse_image_path("/insecure/plain/s3://pixq/a.jpg", OPEN).expires is None
    refused(f"/insecure/exp:{int(time.time()) - 10}/plain/s3://pixq/a.jpg", ErrorCode.URL_EXPIRED)
    assert PixqError(ErrorCode.URL_EXPIRED, "x").http_status == 410
    # the expiry is signed: a builder cannot be stretched by editing it
    pair = ("11" * 32, "22" * 32)
    path = f"/exp:{future}/plain/s3://pixq/a.jpg"
    good = reference_signature(*pair, path)
    refused(f"/{good}{path.replace(str(future), str(future + 9999))}", ErrorCode.SIGNATURE_INVALID, signing(pair))


def test_presets():
    presets = parse_presets("sharp=sh:1/q:90; thumb=rs:fill:100:100/pr:sharp")
    assert presets == {"sharp": "sh:1/q:90", "thumb": "rs:fill:100:100/pr:sharp"}
    expanded = spec_of("pr:thumb", presets=presets)
    assert expanded == spec_of("rs:fill:100:100/sh:1/q:90")
    assert spec_of("preset:sharp:thumb", presets=presets) == expanded
    # options after a preset override it (imgproxy applies them in order)
    assert spec_of("pr:thumb/q:50", presets=presets)["variants"][0]["quality"] == 50
    message = refused("/insecure/pr:nope/plain/s3://pixq/a.jpg", ErrorCode.INVALID_PARAMETERS, presets=presets)
    assert "'nope'" in message
    # a preset called default applies to every URL first
    defaults = parse_presets("default=q:70/f:webp")
    assert spec_of("", presets=defaults)["variants"][0]["quality"] == 70
    assert spec_of("q:95", presets=defaults)["variants"][0]["quality"] == 95


@pytest.mark.parametrize(("text", "reason"), [
    ("thumb", "expected name="), ("a=zz:1", "unknown option 'zz'"), ("a=w:x", "width"), ("a=pr:b;b=pr:a", "recursively"),
    ("a=pr:missing", "'missing'"), ("a=w:1;a=w:2", "twice"), ("a=w", "not an option"), ("a b=w:1", "expected name="),
])
def test_bad_presets_are_refused(text, reason):
    with pytest.raises(ValueError) as info:
        parse_presets(text)
    assert reason in str(info.value)


# --- Canonical -------------------------------------------------------------------------------


def test_canonical_is_the_same_for_the_same_meaning():
    presets = parse_presets("card=rs:fill:300:200/g:sm")
    same = [
        "rs:fill:300:200/g:sm/q:85/bl:2/f:webp",
        "resize:fill:300:200/gravity:sm/quality:85/blur:2/format:webp",   # long names
        "f:webp/bl:2/q:85/g:sm/rs:fill:300:200",                          # order
        "rt:fill/w:300/h:200/g:sm/q:85/bl:2.0/ext:webp/el:0/ex:0/rot:0",  # split options, explicit defaults
        "s:300:200/rt:fill/g:sm/q:85/bl:2/f:webp/bg:",
        "pr:card/q:85/bl:2/f:webp",                                       # preset expanded
        "w:999/rs:fill:300:200/g:ce/g:sm/q:85/bl:2/f:webp",               # overridden values
    ]
    strings = {canonical(options, presets) for options in same}
    assert len(strings) == 1, strings
    (text,) = strings
    assert "photos" not in text  # the source is not part of it
    assert json.loads(text)["variants"][0]["format"] == "webp"


def test_defaults_and_equivalent_spellings_give_one_canonical():
    groups = [
        ["", "q:0", "q:80", "rt:fit", "el:0", "g:ce", "rot:0", "rot:360", "bg:ffffff", "ex:0", "exp:0",
         "rs:fill", "s:0:0:1"],
        ["w:300", "rs:fit:300", "rs:fill:300", "s:300:0", "width:300/height:0", "rs:auto:300", "rs:fill-down:300"],
        ["f:jpg", "f:jpeg", "ext:JPG"],
        ["rot:90", "rot:-270", "rot:450"],
        ["bg:f80", "bg:FF8800", "bg:255:136:0"],
    ]
    seen = set()
    for group in groups:
        strings = {canonical(options) for options in group}
        assert len(strings) == 1, (group, strings)
        seen |= strings
    assert len(seen) == len(groups)  # and the groups differ from one another


def test_canonical_tells_different_requests_apart():
    variants = ["w:300", "w:301", "h:300", "rs:fill:300:200", "rs:fit:300:200", "rs:force:300:200",
                "rs:fill:300:200/g:no", "rs:fill:300:200/el:1", "w:300/q:81", "w:300/f:png", "w:300/bl:1",
                "w:300/sh:1", "c:10:10", "rot:90", "w:300/cb:v2", "w:300/cb:v3", "rs:fit:300:200:0:1"]
    strings = [canonical(options) for options in variants]
    assert len(set(strings)) == len(strings)


def test_canonical_keeps_the_cachebuster_and_drops_expires():
    future = int(time.time()) + 600
    assert canonical("w:10/cb:abc").endswith("|cb:abc")
    assert canonical("w:10/cachebuster:abc") == canonical("cb:abc/w:10")
    assert canonical(f"w:10/exp:{future}") == canonical("w:10") == canonical(f"w:10/exp:{future + 1}")


def test_canonical_ignores_the_source_form():
    source = "s3://pixq/photos/cat.jpg"
    encoded = base64.urlsafe_b64encode(source.encode()).decode().rstrip("=")
    assert canonical("w:10", source=f"/plain/{source}") == canonical("w:10", source=f"/{encoded}")
    assert canonical("w:10", source=f"/plain/{source}@png") == canonical("w:10/f:png")


# --- Settings --------------------------------------------------------------------------------


def config_error(capsys, **overrides) -> str:
    with pytest.raises(SystemExit) as info:
        load_settings(**overrides)
    assert info.value.code == 2
    return capsys.readouterr().err


def test_settings_are_checked_at_start(capsys):
    assert "invalid configuration: IMG_KEY:" in config_error(capsys, img_key="xyz", img_salt="00")
    assert "invalid configuration: IMG_SALT:" in config_error(capsys, img_key="00", img_salt="0g")
    assert "invalid configuration: IMG_KEY:" in config_error(capsys, img_key="00,,01", img_salt="00,01")
    err = config_error(capsys, img_key="00,01", img_salt="02")
    assert "invalid configuration: IMG_SALT:" in err and "2 key(s)" in err
    assert "invalid configuration: IMG_SALT:" in config_error(capsys, img_key="00")
    for size in (0, 33):
        assert "invalid configuration: IMG_SIGNATURE_SIZE:" in config_error(capsys, img_signature_size=size)
    err = config_error(capsys, img_presets="thumb=zz:1")
    assert "invalid configuration: IMG_PRESETS:" in err and "'zz'" in err
    assert "invalid configuration: IMG_ALLOW_UNSIGNED:" in config_error(
        capsys, img_key="00", img_salt="01", img_allow_unsigned=True)
    assert "invalid configuration: IMG_KEY:" in config_error(capsys, img_key="CHANGE_ME", img_salt="00")
    settings = load_settings(img_key=" 0A0b , ff", img_salt="01,02", img_presets="a=w:1")
    assert Signing.from_settings(settings).pairs == ((b"\x0a\x0b", b"\x01"), (b"\xff", b"\x02"))


def test_key_and_salt_from_files(tmp_path, monkeypatch):
    (tmp_path / "key").write_text(DOC_KEY + "\n")
    (tmp_path / "salt").write_text(DOC_SALT + "\n")
    for name in ("IMG_KEY", "IMG_SALT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IMG_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("IMG_SALT_FILE", str(tmp_path / "salt"))
    assert Signing.from_settings(load_settings()).sign(DOC_PATH) == DOC_SIGNATURE
