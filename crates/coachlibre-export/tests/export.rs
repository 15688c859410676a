//! The three formats of one report, each read back by an independent reader: the PDF's text by
//! `pdf-extract`, the workbook's cells by `calamine`.

use std::io::Cursor;

use calamine::{Data, Reader, Xlsx, open_workbook_from_rs};
use coachlibre_export::{Report, Table, to_markdown, to_pdf, to_xlsx};

fn report() -> Report {
    let mut body = String::from(
        "## Modèle économique\n\nCours de yoga pour débutants à Lyon; réservation en ligne.\n\n\
         - Offre : cours collectifs\n- Prix : 15 € la séance\n\n## Risques\n\n1. Concurrence des applications\n",
    );
    // Enough text for several pages.
    for i in 0..60 {
        body.push_str(&format!(
            "\nParagraphe {i}: les clients cherchent des horaires souples et un suivi personnalisé.\n"
        ));
    }
    Report {
        title: "Analyse — Acme Yoga".into(),
        subtitle: Some("https://acme.test · 22 novembre 2026".into()),
        markdown: body,
        tables: vec![Table {
            name: "Compétences".into(),
            headers: vec!["Skill".into(), "Statut".into()],
            rows: vec![
                vec!["business-model-extractor".into(), "ok".into()],
                vec![
                    "legal-compliance-scanner".into(),
                    "échec: délai dépassé".into(),
                ],
            ],
        }],
    }
}

#[test]
fn markdown_has_the_title_body_and_tables() {
    let md = to_markdown(&report());
    assert!(md.starts_with("# Analyse — Acme Yoga\n\n_https://acme.test"));
    assert!(md.contains("## Modèle économique"));
    assert!(md.contains("| legal-compliance-scanner | échec: délai dépassé |"));
}

#[test]
fn the_pdf_parses_and_holds_the_text() {
    let bytes = to_pdf(&report());
    assert!(bytes.starts_with(b"%PDF-"));
    let text = pdf_extract::extract_text_from_mem(&bytes).expect("the PDF parses");
    for needle in [
        "Analyse",
        "Acme Yoga",
        "Modèle économique",
        "15 € la séance",
        "Concurrence des applications",
        "Paragraphe 59",
        "legal-compliance-scanner",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    // Several pages, numbered.
    assert!(
        text.contains("Acme Yoga · 1 / 2") && text.contains("Acme Yoga · 2 / 2"),
        "{text}"
    );
}

#[test]
fn the_workbook_opens_with_a_reader() {
    let bytes = to_xlsx(&report()).expect("xlsx");
    let mut wb: Xlsx<_> = open_workbook_from_rs(Cursor::new(bytes)).expect("opens");
    assert_eq!(
        wb.sheet_names(),
        vec!["Report".to_owned(), "Compétences".to_owned()]
    );
    let range = wb.worksheet_range("Report").expect("sheet");
    let cell = |r: u32, c: u32| match range.get_value((r, c)) {
        Some(Data::String(s)) => s.clone(),
        other => format!("{other:?}"),
    };
    assert_eq!(cell(0, 0), "Analyse — Acme Yoga");
    assert_eq!(cell(3, 0), "Section");
    assert_eq!(cell(4, 0), "Modèle économique");
    assert!(cell(4, 1).contains("réservation en ligne"));
    assert_eq!(cell(5, 1), "• Offre : cours collectifs");
    let table = wb.worksheet_range("Compétences").expect("table sheet");
    assert_eq!(
        table.get_value((2, 1)),
        Some(&Data::String("échec: délai dépassé".into()))
    );
}
