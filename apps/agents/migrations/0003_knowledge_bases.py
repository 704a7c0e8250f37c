"""Agents name knowledge bases instead of document ids. Knowledge 0003 moved the documents inserted
before knowledge bases into a base named "Documents", each keeping its old id as metadata
`legacy_id`: an agent's old document ids become the knowledge bases those documents are in now
(ids of documents that no longer exist are dropped). Backwards, an agent gets the legacy ids of the
documents of its knowledge bases."""

from django.db import migrations, models


def document_ids_to_knowledge_bases(apps, schema_editor):  # type: ignore[no-untyped-def]
    # Foreign keys checked as rows are written: no trigger events left pending when a later
    # operation of this transaction alters the tables.
    schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    agent_model = apps.get_model("agents", "Agent")
    document_model = apps.get_model("knowledge", "Document")
    for agent in agent_model.objects.exclude(knowledge_document_ids=[]):
        legacy_ids = [value for value in agent.knowledge_document_ids or [] if isinstance(value, int)]
        bases = (
            document_model.objects.filter(metadata__legacy_id__in=legacy_ids)
            .values_list("knowledge_base_id", flat=True)
            .distinct()
        )
        agent.knowledge_bases.set(list(bases))


def knowledge_bases_to_document_ids(apps, schema_editor):  # type: ignore[no-untyped-def]
    schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    agent_model = apps.get_model("agents", "Agent")
    document_model = apps.get_model("knowledge", "Document")
    for agent in agent_model.objects.filter(knowledge_bases__isnull=False).distinct():
        legacy_ids = document_model.objects.filter(
            knowledge_base__in=agent.knowledge_bases.all(), metadata__has_key="legacy_id"
        ).values_list("metadata__legacy_id", flat=True)
        agent.knowledge_document_ids = sorted(int(value) for value in legacy_ids)
        agent.save(update_fields=["knowledge_document_ids"])


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0002_agent_table"),
        ("knowledge", "0003_knowledge_bases"),
    ]

    operations = [
        migrations.AddField(
            model_name="agent",
            name="knowledge_bases",
            field=models.ManyToManyField(blank=True, related_name="agents", to="knowledge.knowledgebase"),
        ),
        migrations.RunPython(document_ids_to_knowledge_bases, knowledge_bases_to_document_ids),
        migrations.RemoveField(model_name="agent", name="knowledge_document_ids"),
    ]
