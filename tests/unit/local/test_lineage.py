"""The local SageMaker lineage service behind a bare gateway (moto server + the service constraints)."""
import time

import boto3
import pytest
from botocore.exceptions import ClientError

from local.aws.gateway import LocalGateway
from local.aws.lineage import LineageService

SM = "arn:aws:sagemaker:us-east-1:123456789012"


@pytest.fixture(scope="module")
def sagemaker():
    with LocalGateway() as gateway:
        LineageService(gateway).install()
        yield boto3.client("sagemaker", endpoint_url=gateway.url, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")


def _data(sagemaker, key: str, version: str = "v1") -> str:
    return sagemaker.create_artifact(
        Source={"SourceUri": f"s3://data/{key}", "SourceTypes": [{"SourceIdType": "S3Version", "Value": version}]},
        ArtifactType="DataSet", Properties={"bucket": "data"})["ArtifactArn"]


def _error(call, **kwargs) -> dict:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    return caught.value.response["Error"]


def test_artifacts_are_named_by_their_source_and_a_source_is_one_artifact(sagemaker):
    arn = _data(sagemaker, "incoming/a.csv")
    assert arn.startswith(f"{SM}:artifact/") and len(arn.rsplit("/", 1)[1]) == 32
    assert _data(sagemaker, "incoming/a.csv", version="v2") != arn  # another version, another artifact
    error = _error(_data, sagemaker=sagemaker, key="incoming/a.csv")
    assert error["Code"] == "ValidationException" and arn in error["Message"]
    described = sagemaker.describe_artifact(ArtifactArn=arn)
    assert described["Source"]["SourceTypes"] == [{"SourceIdType": "S3Version", "Value": "v1"}]
    assert described["ArtifactType"] == "DataSet" and described["Properties"] == {"bucket": "data"}
    listed = sagemaker.list_artifacts(SourceUri="s3://data/incoming/a.csv")["ArtifactSummaries"]
    assert {a["ArtifactArn"] for a in listed} >= {arn} and len(listed) == 2
    assert _error(sagemaker.describe_artifact, ArtifactArn=f"{SM}:artifact/{'0' * 32}")["Code"] == "ResourceNotFound"


def test_contexts_and_actions_by_name_and_duplicates_refused(sagemaker):
    context = sagemaker.create_context(ContextName="endpoint-prod", ContextType="Endpoint",
                                       Source={"SourceUri": f"{SM}:endpoint/prod"})["ContextArn"]
    assert context == f"{SM}:context/endpoint-prod"
    assert _error(sagemaker.create_context, ContextName="endpoint-prod", ContextType="Endpoint",
                  Source={"SourceUri": "x"})["Code"] == "ValidationException"
    assert sagemaker.describe_context(ContextName="endpoint-prod")["ContextType"] == "Endpoint"
    assert sagemaker.describe_context(ContextName=context)["ContextArn"] == context
    action = sagemaker.create_action(ActionName="train-1", ActionType="ModelTraining", Status="Completed",
                                     Source={"SourceUri": f"{SM}:training-job/t1"},
                                     Properties={"max_depth": "5"})["ActionArn"]
    assert sagemaker.describe_action(ActionName="train-1")["Properties"] == {"max_depth": "5"}
    assert [a["ActionArn"] for a in sagemaker.list_actions(ActionType="ModelTraining")["ActionSummaries"]] == [action]
    assert _error(sagemaker.describe_action, ActionName="nope")["Code"] == "ResourceNotFound"


def test_associations_are_not_duplicated_and_filter_sort_and_page(sagemaker):
    data = _data(sagemaker, "assoc/data.csv")
    model = sagemaker.create_artifact(Source={"SourceUri": f"{SM}:model-package/g/1"},
                                      ArtifactType="ModelPackage")["ArtifactArn"]
    endpoint = sagemaker.create_context(ContextName="endpoint-assoc", ContextType="Endpoint",
                                        Source={"SourceUri": f"{SM}:endpoint/assoc"})["ContextArn"]
    first = sagemaker.add_association(SourceArn=data, DestinationArn=model, AssociationType="ContributedTo")
    again = sagemaker.add_association(SourceArn=data, DestinationArn=model, AssociationType="ContributedTo")
    assert (first["SourceArn"], first["DestinationArn"]) == (again["SourceArn"], again["DestinationArn"])
    assert len(sagemaker.list_associations(SourceArn=data)["AssociationSummaries"]) == 1
    time.sleep(0.01)
    between = time.time()
    time.sleep(0.01)
    sagemaker.add_association(SourceArn=model, DestinationArn=endpoint, AssociationType="AssociatedWith")
    summary, = sagemaker.list_associations(DestinationArn=endpoint)["AssociationSummaries"]
    assert (summary["SourceType"], summary["DestinationType"], summary["DestinationName"]) == (
        "ModelPackage", "Endpoint", "endpoint-assoc")
    assert [a["DestinationArn"] for a in sagemaker.list_associations(
        SourceType="ModelPackage", AssociationType="AssociatedWith")["AssociationSummaries"]] == [endpoint]
    assert [a["DestinationArn"] for a in sagemaker.list_associations(
        SourceArn=model, CreatedAfter=between)["AssociationSummaries"]] == [endpoint]
    assert sagemaker.list_associations(SourceArn=model, CreatedBefore=between)["AssociationSummaries"] == []
    ordered = sagemaker.list_associations(SortBy="CreationTime", SortOrder="Ascending", MaxResults=1)
    assert ordered["AssociationSummaries"][0]["SourceArn"] != endpoint and ordered["NextToken"]
    every, token = [], None
    while True:
        page = sagemaker.list_associations(MaxResults=1, **({"NextToken": token} if token else {}))
        every += page["AssociationSummaries"]
        token = page.get("NextToken")
        if not token:
            break
    assert len(every) == len(sagemaker.list_associations()["AssociationSummaries"]) >= 2
    missing = _error(sagemaker.add_association, SourceArn=data, DestinationArn=f"{SM}:context/absent")
    assert missing["Code"] == "ResourceNotFound"


def test_query_lineage_walks_directions_depth_and_filters(sagemaker):
    data = _data(sagemaker, "query/data.csv")
    manifest = sagemaker.create_artifact(Source={"SourceUri": "s3://art/query/manifest.json"},
                                         ArtifactType="DataSet")["ArtifactArn"]
    model = sagemaker.create_artifact(Source={"SourceUri": f"{SM}:model-package/q/1"},
                                      ArtifactType="ModelPackage")["ArtifactArn"]
    endpoint = sagemaker.create_context(ContextName="endpoint-query", ContextType="Endpoint",
                                        Source={"SourceUri": f"{SM}:endpoint/query"})["ContextArn"]
    sagemaker.add_association(SourceArn=data, DestinationArn=manifest, AssociationType="ContributedTo")
    sagemaker.add_association(SourceArn=manifest, DestinationArn=model, AssociationType="ContributedTo")
    sagemaker.add_association(SourceArn=model, DestinationArn=endpoint, AssociationType="AssociatedWith")

    up = sagemaker.query_lineage(StartArns=[model], Direction="Ascendants", IncludeEdges=True)
    assert {v["Arn"] for v in up["Vertices"]} == {data, manifest}
    assert {(e["SourceArn"], e["DestinationArn"]) for e in up["Edges"]} == {(data, manifest), (manifest, model)}
    shallow = sagemaker.query_lineage(StartArns=[model], Direction="Ascendants", MaxDepth=1)
    assert [v["Arn"] for v in shallow["Vertices"]] == [manifest] and shallow["Edges"] == []
    down = sagemaker.query_lineage(StartArns=[data], Direction="Descendants", MaxDepth=10)
    assert {v["Arn"] for v in down["Vertices"]} == {manifest, model, endpoint}
    contexts = sagemaker.query_lineage(StartArns=[manifest], Direction="Both",
                                       Filters={"LineageTypes": ["Context"]})["Vertices"]
    assert contexts == [{"Arn": endpoint, "Type": "Endpoint", "LineageType": "Context"}]
    typed = sagemaker.query_lineage(StartArns=[endpoint], Direction="Ascendants",
                                    Filters={"Types": ["ModelPackage"]})["Vertices"]
    assert [v["Arn"] for v in typed] == [model]


def test_the_service_constraints_refuse_what_aws_refuses(sagemaker):
    bad_enum = _error(sagemaker.create_artifact, Source={"SourceUri": "s3://data/x",
                                                         "SourceTypes": [{"SourceIdType": "Sha1", "Value": "v"}]},
                       ArtifactType="DataSet")
    assert bad_enum["Code"] == "ValidationException" and "Sha1" in bad_enum["Message"]
    assert "enum" in bad_enum["Message"].lower() or "satisfy" in bad_enum["Message"]
    bad_name = _error(sagemaker.create_context, ContextName="model/1", ContextType="Endpoint",
                      Source={"SourceUri": "x"})
    assert bad_name["Code"] == "ValidationException" and "contextName" in bad_name["Message"]
    too_long = _error(sagemaker.create_action, ActionName="a" * 121, ActionType="T", Source={"SourceUri": "x"})
    assert too_long["Code"] == "ValidationException"
    not_lineage = _error(sagemaker.add_association, SourceArn=f"{SM}:model-package/g/1",
                         DestinationArn=f"{SM}:context/endpoint-prod")
    assert not_lineage["Code"] == "ValidationException" and "sourceArn" in not_lineage["Message"]
    direction = _error(sagemaker.query_lineage, StartArns=[f"{SM}:context/endpoint-prod"], Direction="Up")
    assert direction["Code"] == "ValidationException" and "direction" in direction["Message"]
    two_starts = _error(sagemaker.query_lineage, StartArns=[f"{SM}:context/a", f"{SM}:context/b"])
    assert two_starts["Code"] == "ValidationException"


def test_mlops_lineage_refuses_what_is_not_a_package_and_prints_for_people(tmp_path, capsys):
    from local import cli
    from local.cli.lineage import describe_for_people

    assert cli.main(["lineage", "houses/1", "--state-dir", str(tmp_path)]) == 2
    assert "not a versioned model package ARN" in capsys.readouterr().err
    assert cli.main(["lineage", f"{SM}:model-package/g/1", "--state-dir", str(tmp_path)]) == 2
    assert "no local cloud is running" in capsys.readouterr().err
    text = describe_for_people({
        "model_package_arn": f"{SM}:model-package/g/1", "model_package_group": "g", "version": 1,
        "dataset": {"uri": "s3://d/k v.csv", "bucket": "d", "key": "k v.csv", "version_id": "v1", "artifact_arn": "a"},
        "manifest": None, "code": {"image_uri": "img:local@sha256:ab", "image_digest": "sha256:ab",
                                   "code_version": "local", "artifact_arn": "i"},
        "pipeline_execution": {"arn": "exec", "context_arn": "c"},
        "training": {"tuning_job_name": "t", "training_job_name": "t-001", "hyperparameters": {"eta": "0.3"}, "arn": "x"},
        "endpoints": [{"endpoint_name": "e", "endpoint_arn": "ea", "context_arn": "ec", "since": "2026-01-01T00:00:00+00:00",
                       "current": False}],
        "associations": [], "missing": ["the dataset manifest"]})
    assert "s3://d/k v.csv?versionId=v1" in text and "  eta = 0.3" in text
    assert "e since 2026-01-01T00:00:00+00:00 (replaced since)" in text and "missing          the dataset manifest" in text
