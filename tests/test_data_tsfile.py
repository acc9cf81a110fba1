"""The UEA/UCR .ts reader on the shipped files and on malformed inputs."""
import math

import pytest

from hybridseq.data import TSFormatError, read_ts
from hybridseq.data.archive import EMBEDDED_DIR

HEADER = "# a comment\n@problemName Toy\n@timeStamps false\n@univariate false\n@dimensions 2\n@equalLength false\n" \
         "@classLabel true a b\n@data\n"


@pytest.mark.parametrize("name,split,cases,channels,lengths,classes", [
    ("BasicMotions", "TRAIN", 40, 6, (100, 100), 4),
    ("BasicMotions", "TEST", 40, 6, (100, 100), 4),
    ("JapaneseVowels", "TRAIN", 270, 12, (7, 26), 9),
    ("JapaneseVowels", "TEST", 370, 12, (7, 29), 9),
])
def test_shipped_files(name, split, cases, channels, lengths, classes):
    data = read_ts(EMBEDDED_DIR / name / f"{name}_{split}.ts")
    assert data.name == name and len(data.values) == len(data.labels) == cases
    assert data.channels == channels and len(data.class_labels) == classes
    sizes = [v.shape[0] for v in data.values]
    assert (min(sizes), max(sizes)) == lengths
    assert set(data.labels) == set(data.class_labels)
    assert not any(v.isnan().any() for v in data.values)


def test_reads_values_missing_and_labels(tmp_path):
    f = tmp_path / "toy.ts"
    f.write_text(HEADER + "1,2,3:4,?,6:a\n1.5,NaN:2:b\n")
    data = read_ts(f)
    assert data.labels == ["a", "b"] and data.class_labels == ["a", "b"]
    assert data.values[0].tolist()[0] == [1.0, 4.0] and math.isnan(data.values[0][1, 1])
    assert data.values[1].shape == (2, 2) and math.isnan(data.values[1][1, 1])   # shorter dimension: padded with NaN
    assert data.times[0].tolist() == [0.0, 1.0, 2.0]


def test_reads_time_stamps_as_per_channel_observations(tmp_path):
    f = tmp_path / "stamped.ts"
    f.write_text(HEADER.replace("@timeStamps false", "@timeStamps true") + "(0,1),(2.5,2):(1,7):a\n")
    data = read_ts(f)
    assert data.times[0].tolist() == [0.0, 1.0, 2.5]
    v = data.values[0]
    assert v[0, 0] == 1 and v[2, 0] == 2 and v[1, 1] == 7 and v[0, 1].isnan() and v[1, 0].isnan()


def test_regression_targets(tmp_path):
    f = tmp_path / "reg.ts"
    f.write_text(HEADER.replace("@classLabel true a b", "@targetLabel true") + "1,2:3,4:0.5\n")
    data = read_ts(f)
    assert data.targets == [0.5] and data.labels is None


@pytest.mark.parametrize("body,line,message", [
    ("1,2:3,x:a\n", 9, "expected a number"),
    ("1,2:a\n", 9, "expected 2 dimension"),
    ("1,2:3,4:a\n1,2:3,4:c\n", 10, "class label 'c' is not declared"),
    ("1,2:3,4:a\n\n1,2:3,4,5,6:a\n", 11, "length"),
])
def test_malformed_data_names_file_and_line(tmp_path, body, line, message):
    f = tmp_path / "bad.ts"
    header = (HEADER.replace("@equalLength false", "@equalLength true\n@seriesLength 2") if message == "length"
              else HEADER)
    f.write_text(header + body)
    with pytest.raises(TSFormatError, match=message) as err:
        read_ts(f)
    shift = 1 if message == "length" else 0
    assert err.value.line == line + shift and str(err.value).startswith(f"{f}:{line + shift}:")


@pytest.mark.parametrize("text,line,message", [
    ("@problemName X\n1,2:a\n", 2, "expected an @key header"),
    ("@problemName X\n@univariate maybe\n@data\n", 2, "must be true or false"),
    ("@problemName X\n@classLabel true a\n", 2, "no @data"),
    ("@dimensions two\n@data\n", 1, "positive integer"),
    ("@classLabel true\n@data\n", 1, "must list the class labels"),
    ("@classLabel false\n@data\n\n", 2, "no cases"),
    ("@classLabel true a\n@data\n1,2:a\n1,2:3:a\n", 4, "expected 1 dimension"),   # the first case sets the width
    ("@classLabel true a\n@data\n1,2,3\n", 3, "then ':' and the label"),
])
def test_malformed_header(tmp_path, text, line, message):
    f = tmp_path / "bad.ts"
    f.write_text(text)
    with pytest.raises(TSFormatError, match=message) as err:
        read_ts(f)
    assert err.value.line == line and str(f) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(TSFormatError, match="cannot read"):
        read_ts(tmp_path / "nope.ts")


def test_percent_comment_lines_are_skipped(tmp_path):
    f = tmp_path / "arff_style.ts"                               # some archive files open with ARFF '%' comments
    f.write_text("% cut down version of a problem\n%\n" + HEADER + "1,2:3,4:b\n")
    data = read_ts(f)
    assert data.name == "Toy" and data.labels == ["b"]


def test_date_time_stamps_become_seconds_since_the_first(tmp_path):
    f = tmp_path / "dated.ts"
    f.write_text(HEADER.replace("@timeStamps false", "@timeStamps true")
                 + "(2007-01-01 00:00:00,1),(2007-01-01 00:02:00,2):(2007-01-01 00:01:30,7):a\n")
    data = read_ts(f)
    assert data.times[0].tolist() == [0.0, 90.0, 120.0] and data.labels == ["a"]
    assert data.values[0][1, 1] == 7 and data.values[0][2, 0] == 2 and data.values[0][1, 0].isnan()


@pytest.mark.parametrize("stamps,message", [("(yesterday,1):(1,2):a", "neither a number nor a date-time"),
                                            ("(NaN,1):(1,2):a", "neither a number nor a date-time"),
                                            ("(2007-01-01 00:00:00,1):(1,2):a", "mix numbers and date-times")])
def test_bad_time_stamps_name_file_and_line(tmp_path, stamps, message):
    f = tmp_path / "bad.ts"
    f.write_text(HEADER.replace("@timeStamps false", "@timeStamps true") + stamps + "\n")
    with pytest.raises(TSFormatError, match=message) as err:
        read_ts(f)
    assert err.value.line == 9 and str(err.value).startswith(f"{f}:9:")
